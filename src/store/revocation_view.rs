//! The revocation view: an in-memory copy of token state — users' profiles and generations, and
//! the live denylist — that the server's token checks read instead of the database. One type for
//! both backends; what differs is the feeder, which applies the database's change log to it and
//! proves it current:
//! - SQLite (`sqlite/revocation.rs`): the WAL index's header moves with every commit, so a check
//!   compares it with the header the view was synchronised at;
//! - PostgreSQL (`postgres/replica.rs`): a change feed in commit order, and a lease under which
//!   every revoking writer waits for this replica's acknowledgement before answering.
//!
//! The view holds a *stamp*: the feeder's name for the state it last synchronised the view to.
//! A lookup is asked at a stamp and answers only if the view is synchronised at exactly that
//! stamp, so the feeder decides what "current" means and the view never guesses.
//!
//! Why it stays exact whatever the log holds: the change log's positions are contiguous. If the
//! rows after the view's position are not exactly `position + 1 ..= head`, something was pruned
//! before the view saw it, and the feeder rebuilds the view from the tables instead.

use super::TokenState;
use super::thread_answers;
use crate::domain::ids::{SessionId, TokenId, UserId};
use crate::domain::session::Denial;
use crate::domain::user::UserProfile;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Users kept in memory at most; beyond it the view is emptied and refills on demand.
const MAX_CACHED_USERS: usize = 200_000;

/// What a view is synchronised at, in the feeder's terms (a WAL-index header, a change
/// position). Equal stamps from one view mean the same contents.
pub(super) type Stamp = [u8; 48];

/// One entry of the change log, as both backends' triggers record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// A token id or a session id was denylisted until `expires_at`.
    Denied {
        id: TokenId,
        expires_at: i64,
        denial: Denial,
    },
    /// The user's generation or profile changed, or the user was deleted: forget it, and the
    /// next check loads it again.
    User(UserId),
}

/// What the view says about a token's user.
#[derive(Debug)]
pub(super) enum Lookup {
    Hit(TokenState),
    /// Current, but the user is not in memory: load it, then [`RevocationView::remember`].
    Miss {
        version: u64,
    },
    /// Not synchronised at the stamp asked about.
    Stale,
}

#[derive(Debug, Clone)]
struct CachedUser {
    profile: Arc<UserProfile>,
    generation: u64,
}

/// std's map and its SipHash: requests read the view only when their thread's remembered answer
/// is stale (`thread_answers.rs`), so its hashing is off the per-request path.
type HashMap<K, V> = std::collections::HashMap<K, V>;

#[derive(Debug, Default)]
struct View {
    users: HashMap<UserId, CachedUser>,
    /// Denylisted ids — token ids and ended sessions' ids, which never collide (128 random
    /// bits each) — → when the last token they cover expires, and why they were denylisted.
    denylist: HashMap<TokenId, (i64, Denial)>,
    /// Position of the last change applied.
    position: i64,
    /// Bumped whenever anything is applied, so a user loaded before can be told apart.
    version: u64,
    /// What the feeder last declared the view synchronised at; `None` until it does.
    stamp: Option<Stamp>,
}

#[derive(Debug)]
pub(super) struct RevocationView {
    /// Unique in the process: threads' remembered answers name the view they came from.
    id: u64,
    view: RwLock<View>,
}

impl Default for RevocationView {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            view: RwLock::new(View::default()),
        }
    }
}

impl RevocationView {
    /// The view's answer if it is synchronised at `stamp`. A token is revoked if its own id or
    /// its session's is on the denylist.
    pub(super) fn lookup(
        &self,
        stamp: &Stamp,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Lookup {
        let view = self.read();
        if view.stamp.as_ref() != Some(stamp) {
            return Lookup::Stale;
        }
        match view.users.get(user_id) {
            Some(user) => Lookup::Hit(TokenState {
                profile: user.profile.clone(),
                current_generation: user.generation,
                revoked: view
                    .denylist
                    .get(jti.as_str())
                    .or_else(|| view.denylist.get(sid.as_str()))
                    .map(|(_, denial)| *denial),
            }),
            None => Lookup::Miss {
                version: view.version,
            },
        }
    }

    /// [`lookup`](Self::lookup), answered without the view's lock when this thread already got
    /// the answer at `stamp` (`thread_answers.rs`). For the reactor's few worker threads only:
    /// each keeps its answers until the stamp moves.
    pub(super) fn lookup_remembering(
        &self,
        stamp: &Stamp,
        user_id: &UserId,
        jti: &TokenId,
        sid: &SessionId,
    ) -> Lookup {
        if let Some(state) = thread_answers::recall(self.id, stamp, user_id, jti, sid) {
            return Lookup::Hit(state);
        }
        let lookup = self.lookup(stamp, user_id, jti, sid);
        if let Lookup::Hit(state) = &lookup {
            thread_answers::remember(self.id, stamp, user_id, jti, sid, state);
        }
        lookup
    }

    /// Position of the last change applied.
    pub(super) fn position(&self) -> i64 {
        self.read().position
    }

    /// Whether the view is synchronised at exactly `stamp`.
    pub(super) fn is_at(&self, stamp: &Stamp) -> bool {
        self.read().stamp.as_ref() == Some(stamp)
    }

    /// Whether the view has been synchronised at all (and so holds a position to continue from).
    pub(super) fn is_synchronised(&self) -> bool {
        self.read().stamp.is_some()
    }

    /// Applies changes in order, each at its position, then declares the view synchronised at
    /// `stamp`. The caller has checked that the positions continue the view's own.
    pub(super) fn apply(&self, changes: impl IntoIterator<Item = (i64, Change)>, stamp: Stamp) {
        let mut view = self.write();
        for (position, change) in changes {
            match change {
                Change::Denied {
                    id,
                    expires_at,
                    denial,
                } => {
                    view.denylist.insert(id, (expires_at, denial));
                }
                Change::User(user_id) => {
                    view.users.remove(&user_id);
                }
            }
            view.position = position;
        }
        view.version += 1;
        view.stamp = Some(stamp);
    }

    /// Starts over from the tables: every user forgotten, the denylist as read, the log position
    /// `position` (read in the same snapshot as the denylist).
    pub(super) fn rebuild(
        &self,
        denylist: impl IntoIterator<Item = (TokenId, i64, Denial)>,
        position: i64,
        stamp: Stamp,
    ) {
        let mut view = self.write();
        view.denylist = denylist
            .into_iter()
            .map(|(id, expires_at, denial)| (id, (expires_at, denial)))
            .collect();
        view.users.clear();
        view.position = position;
        view.version += 1;
        view.stamp = Some(stamp);
    }

    /// Declares the view synchronised at `stamp` with nothing applied (the feeder proved nothing
    /// changed since).
    pub(super) fn restamp(&self, stamp: Stamp) {
        self.write().stamp = Some(stamp);
    }

    /// Adds a user loaded after a miss at `version` — unless something was applied since, in
    /// which case what was loaded may be stale and the next request loads again.
    pub(super) fn remember(&self, version: u64, profile: &Arc<UserProfile>, generation: u64) {
        let mut view = self.write();
        if view.version != version {
            return;
        }
        if view.users.len() >= MAX_CACHED_USERS {
            view.users.clear();
        }
        let user = CachedUser {
            profile: profile.clone(),
            generation,
        };
        view.users.insert(profile.id.clone(), user);
    }

    /// Forgets denylist entries for tokens that expired before `cutoff`.
    pub(super) fn prune(&self, cutoff: i64) {
        self.write()
            .denylist
            .retain(|_, (expires_at, _)| *expires_at >= cutoff);
    }

    fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `changes` continue exactly from `position` and reach `head` with no gap: anything
/// else means rows were pruned before the view saw them, and it must rebuild.
pub(super) fn continues(position: i64, changes: &[(i64, Change)], head: i64) -> bool {
    let contiguous = changes
        .iter()
        .zip(position + 1..)
        .all(|((at, _), expected)| *at == expected);
    contiguous && position + i64::try_from(changes.len()).unwrap_or(i64::MAX) == head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: &str) -> Arc<UserProfile> {
        Arc::new(UserProfile::with_id(id))
    }

    fn ids() -> (UserId, TokenId, SessionId) {
        (
            UserId::from_string("u1".into()),
            TokenId::from_string("j1".into()),
            SessionId::from_string("s1".into()),
        )
    }

    const AT_ONE: Stamp = [1; 48];
    const AT_TWO: Stamp = [2; 48];

    #[test]
    fn answers_only_at_the_stamp_it_was_synchronised_at() {
        let view = RevocationView::default();
        let (user, jti, sid) = ids();
        assert!(matches!(
            view.lookup(&AT_ONE, &user, &jti, &sid),
            Lookup::Stale
        ));
        view.restamp(AT_ONE);
        let Lookup::Miss { version } = view.lookup(&AT_ONE, &user, &jti, &sid) else {
            panic!("a synchronised view without the user is a miss");
        };
        view.remember(version, &profile("u1"), 3);
        let Lookup::Hit(state) = view.lookup(&AT_ONE, &user, &jti, &sid) else {
            panic!("remembered");
        };
        assert_eq!((state.current_generation, state.revoked), (3, None));
        assert!(matches!(
            view.lookup(&AT_TWO, &user, &jti, &sid),
            Lookup::Stale
        ));
    }

    #[test]
    fn a_denied_session_or_token_id_revokes_and_a_user_change_forgets_the_user() {
        let view = RevocationView::default();
        let (user, jti, sid) = ids();
        view.restamp(AT_ONE);
        view.remember(0, &profile("u1"), 0);
        let denied = Change::Denied {
            id: TokenId::from_string(sid.as_str().to_owned()),
            expires_at: 100,
            denial: Denial::Logout,
        };
        view.apply([(1, denied)], AT_TWO);
        assert_eq!(view.position(), 1);
        let Lookup::Hit(state) = view.lookup_remembering(&AT_TWO, &user, &jti, &sid) else {
            panic!("the user stays");
        };
        assert_eq!(state.revoked, Some(Denial::Logout));
        view.apply([(2, Change::User(user.clone()))], AT_ONE);
        assert!(matches!(
            view.lookup(&AT_ONE, &user, &jti, &sid),
            Lookup::Miss { .. }
        ));
        view.prune(101);
        view.remember(view_version(&view), &profile("u1"), 1);
        let Lookup::Hit(state) = view.lookup(&AT_ONE, &user, &jti, &sid) else {
            panic!("remembered again");
        };
        assert_eq!(state.revoked, None, "pruned past its expiry");
    }

    fn view_version(view: &RevocationView) -> u64 {
        view.read().version
    }

    #[test]
    fn a_user_loaded_before_a_change_is_not_remembered_after_it() {
        let view = RevocationView::default();
        let (user, jti, sid) = ids();
        view.restamp(AT_ONE);
        let Lookup::Miss { version } = view.lookup(&AT_ONE, &user, &jti, &sid) else {
            panic!("miss");
        };
        view.apply([(1, Change::User(user.clone()))], AT_ONE);
        view.remember(version, &profile("u1"), 0);
        assert!(matches!(
            view.lookup(&AT_ONE, &user, &jti, &sid),
            Lookup::Miss { .. }
        ));
    }

    #[test]
    fn a_user_loaded_before_a_rebuild_is_not_remembered_after_it() {
        let view = RevocationView::default();
        let (user, jti, sid) = ids();
        view.restamp(AT_ONE);
        let Lookup::Miss { version } = view.lookup(&AT_ONE, &user, &jti, &sid) else {
            panic!("miss");
        };
        view.rebuild([], 3, AT_ONE);
        view.remember(version, &profile("u1"), 0);
        assert!(matches!(
            view.lookup(&AT_ONE, &user, &jti, &sid),
            Lookup::Miss { .. }
        ));
    }

    #[test]
    fn every_user_remembered_is_kept_while_there_is_room() {
        let view = RevocationView::default();
        view.restamp(AT_ONE);
        let (jti, sid) = (
            TokenId::from_string("j".into()),
            SessionId::from_string("s".into()),
        );
        for id in ["u1", "u2", "u3"] {
            view.remember(0, &profile(id), 0);
        }
        for id in ["u1", "u2", "u3"] {
            let user = UserId::from_string(id.into());
            assert!(
                matches!(view.lookup(&AT_ONE, &user, &jti, &sid), Lookup::Hit(_)),
                "{id}"
            );
        }
    }

    #[test]
    fn rebuild_replaces_the_denylist_and_forgets_every_user() {
        let view = RevocationView::default();
        let (user, jti, sid) = ids();
        view.restamp(AT_ONE);
        view.remember(0, &profile("u1"), 0);
        view.rebuild(
            [(TokenId::from_string("j1".into()), 50, Denial::Reuse)],
            7,
            AT_TWO,
        );
        assert_eq!(view.position(), 7);
        let Lookup::Miss { version } = view.lookup(&AT_TWO, &user, &jti, &sid) else {
            panic!("forgotten");
        };
        view.remember(version, &profile("u1"), 0);
        let Lookup::Hit(state) = view.lookup(&AT_TWO, &user, &jti, &sid) else {
            panic!("hit");
        };
        assert_eq!(state.revoked, Some(Denial::Reuse));
    }

    #[test]
    fn only_an_unbroken_run_to_the_head_continues_a_position() {
        let change = || Change::User(UserId::from_string("u".into()));
        assert!(continues(4, &[], 4));
        assert!(continues(4, &[(5, change()), (6, change())], 6));
        assert!(!continues(4, &[(6, change())], 6), "5 was pruned");
        assert!(!continues(4, &[(5, change())], 6), "short of the head");
        assert!(!continues(4, &[], 5), "nothing read, head ahead");
        assert!(!continues(4, &[(5, change()), (7, change())], 7));
    }
}
