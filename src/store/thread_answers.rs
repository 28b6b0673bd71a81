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
    by_jti: std::collections::HashMap<TokenId, Answer>,
    /// The thread's copy of each user's profile, shared by that user's answers: one copy (and
    /// one rendering of it, `http::profile_view`) per user, however many tokens they hold.
    profiles: std::collections::HashMap<UserId, Arc<crate::domain::user::UserProfile>>,
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
