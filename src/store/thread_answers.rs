//! Each worker thread's answers from the revocation view, valid while the view's stamp stays.
//!
//! Asking the view takes its shared lock and a reference on the user's shared profile: with two
//! worker threads on two CPUs, the lock word and the reference count would move between the
//! CPUs on every request (BENCHMARKS.md, "The hot path, stage by stage"). So a thread keeps the
//! answers it got, with its own copy of each user's profile, tagged with the stamp they were
//! read at (`revocation_view.rs`: a WAL-index header on SQLite, a change position on PostgreSQL).
//!
//! Why that stays exact: the feeder's proof of currency still runs on every request — that check
//! does not change — and the view changes only by applying changes, which move the stamp. While
//! the stamp equals the one an answer was read at, nothing was applied since, and the view would
//! give the same answer. Any other stamp — or another view, in a process with several — and the
//! thread forgets its answers and asks the view.

use super::TokenState;
use super::revocation_view::Stamp;
use crate::domain::ids::{SessionId, TokenId, UserId};
use std::cell::RefCell;
use std::sync::Arc;

/// Answers one thread keeps; past it, it starts over. Sized for thousands of clients' tokens
/// presented in turn (BENCHMARKS.md, "Forward auth and many tokens").
const REMEMBERED: usize = 16_384;

/// One answer: the token's user and session are part of the question.
struct Answer {
    user_id: UserId,
    sid: SessionId,
    state: TokenState,
}

#[derive(Default)]
struct Answers {
    /// The view they came from and the stamp they were read at.
    view: u64,
    stamp: Option<Stamp>,
    /// Keyed by ids of tokens that verified: random ids of our own, which no client chooses
    /// (one that could would need the signing key), so a fast hash suffices here.
    by_jti: foldhash::HashMap<TokenId, Answer>,
    /// The thread's copy of each user's profile, shared by that user's answers: one copy (and
    /// one rendering of it, `http::profile_view`) per user, however many tokens they hold.
    profiles: foldhash::HashMap<UserId, Arc<crate::domain::user::UserProfile>>,
}

thread_local! {
    static ANSWERS: RefCell<Answers> = RefCell::new(Answers::default());
}

/// This thread's answer for the token, if it got one from view `view` at exactly `stamp`.
pub(super) fn recall(
    view: u64,
    stamp: &Stamp,
    user_id: &UserId,
    jti: &TokenId,
    sid: &SessionId,
) -> Option<TokenState> {
    ANSWERS.with_borrow(|answers| {
        if answers.view != view || answers.stamp.as_ref() != Some(stamp) {
            return None;
        }
        let answer = answers.by_jti.get(jti)?;
        (answer.user_id == *user_id && answer.sid == *sid).then(|| answer.state.clone())
    })
}

/// Keeps `state`, which view `view` gave at `stamp`, for this thread.
pub(super) fn remember(
    view: u64,
    stamp: &Stamp,
    user_id: &UserId,
    jti: &TokenId,
    sid: &SessionId,
    state: &TokenState,
) {
    ANSWERS.with_borrow_mut(|answers| {
        if answers.view != view
            || answers.stamp.as_ref() != Some(stamp)
            || answers.by_jti.len() >= REMEMBERED
        {
            answers.by_jti.clear();
            answers.profiles.clear();
            answers.view = view;
            answers.stamp = Some(*stamp);
        }
        // The thread's own copy: its reference count is touched by this thread only. At one
        // stamp the view holds one profile per user, so a copy made for any of the user's
        // tokens is the copy for all of them.
        let profile = answers
            .profiles
            .entry(user_id.clone())
            .or_insert_with(|| Arc::new((*state.profile).clone()))
            .clone();
        let state = TokenState {
            profile,
            ..state.clone()
        };
        answers.by_jti.insert(
            jti.clone(),
            Answer {
                user_id: user_id.clone(),
                sid: sid.clone(),
                state,
            },
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user::UserProfile;

    const VIEW: u64 = 7;
    const AT_ONE: Stamp = [1; 48];
    const AT_TWO: Stamp = [2; 48];

    fn state(user: &str, generation: u64) -> TokenState {
        TokenState {
            profile: Arc::new(UserProfile::with_id(user)),
            current_generation: generation,
            revoked: None,
        }
    }

    fn id<T>(make: fn(String) -> T, text: &str) -> T {
        make(text.to_owned())
    }

    fn keep(stamp: &Stamp, user: &str, jti: &str, sid: &str, state: &TokenState) {
        remember(
            VIEW,
            stamp,
            &id(UserId::from_string, user),
            &id(TokenId::from_string, jti),
            &id(SessionId::from_string, sid),
            state,
        );
    }

    fn ask(view: u64, stamp: &Stamp, user: &str, jti: &str, sid: &str) -> Option<TokenState> {
        recall(
            view,
            stamp,
            &id(UserId::from_string, user),
            &id(TokenId::from_string, jti),
            &id(SessionId::from_string, sid),
        )
    }

    #[test]
    fn an_answer_is_recalled_for_the_same_question_at_the_same_stamp_of_the_same_view() {
        keep(&AT_ONE, "u1", "j1", "s1", &state("u1", 3));
        let recalled = ask(VIEW, &AT_ONE, "u1", "j1", "s1").expect("remembered");
        assert_eq!(recalled.current_generation, 3);
        assert_eq!(recalled.profile.id, "u1");
    }

    #[test]
    fn nothing_is_recalled_at_another_stamp_from_another_view_or_for_another_question() {
        keep(&AT_ONE, "u1", "j1", "s1", &state("u1", 3));
        assert!(ask(VIEW, &AT_TWO, "u1", "j1", "s1").is_none(), "stamp");
        assert!(ask(VIEW + 1, &AT_ONE, "u1", "j1", "s1").is_none(), "view");
        assert!(ask(VIEW, &AT_ONE, "u2", "j1", "s1").is_none(), "user");
        assert!(ask(VIEW, &AT_ONE, "u1", "j1", "s2").is_none(), "session");
        assert!(ask(VIEW, &AT_ONE, "u1", "j2", "s1").is_none(), "token");
        assert!(
            ask(VIEW, &AT_ONE, "u1", "j1", "s1").is_some(),
            "still there"
        );
    }

    #[test]
    fn answers_of_one_stamp_are_kept_together_and_forgotten_together() {
        keep(&AT_ONE, "u1", "j1", "s1", &state("u1", 3));
        keep(&AT_ONE, "u2", "j2", "s2", &state("u2", 5));
        assert!(ask(VIEW, &AT_ONE, "u1", "j1", "s1").is_some());
        assert!(ask(VIEW, &AT_ONE, "u2", "j2", "s2").is_some());
        // An answer at a new stamp starts over: nothing of the old stamp survives into it.
        keep(&AT_TWO, "u2", "j2", "s2", &state("u2", 6));
        assert!(ask(VIEW, &AT_TWO, "u1", "j1", "s1").is_none());
        let newer = ask(VIEW, &AT_TWO, "u2", "j2", "s2").unwrap();
        assert_eq!(newer.current_generation, 6);
    }

    #[test]
    fn an_answer_from_another_view_starts_over_too() {
        keep(&AT_ONE, "u1", "j1", "s1", &state("u1", 3));
        remember(
            VIEW + 1,
            &AT_ONE,
            &id(UserId::from_string, "u2"),
            &id(TokenId::from_string, "j2"),
            &id(SessionId::from_string, "s2"),
            &state("u2", 5),
        );
        assert!(ask(VIEW + 1, &AT_ONE, "u1", "j1", "s1").is_none());
        assert!(ask(VIEW + 1, &AT_ONE, "u2", "j2", "s2").is_some());
    }

    #[test]
    fn a_users_tokens_share_one_copy_of_the_profile_made_for_this_thread() {
        let shared = state("u1", 3);
        keep(&AT_ONE, "u1", "j1", "s1", &shared);
        keep(&AT_ONE, "u1", "j2", "s2", &shared);
        let first = ask(VIEW, &AT_ONE, "u1", "j1", "s1").unwrap();
        let second = ask(VIEW, &AT_ONE, "u1", "j2", "s2").unwrap();
        assert!(Arc::ptr_eq(&first.profile, &second.profile), "one copy");
        assert!(
            !Arc::ptr_eq(&first.profile, &shared.profile),
            "the thread's own"
        );
        assert_eq!(*first.profile, *shared.profile);
    }
}
