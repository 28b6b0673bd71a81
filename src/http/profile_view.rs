//! The public view of an account — what its owner may read — as the JSON body `GET
//! /v1/users/me` answers with.
//!
//! A profile does not change while it is shared: the revocation view hands every request for a
//! user the same `Arc<UserProfile>` until something about that user is committed, and then a new
//! one. So the body is rendered once per `Arc` and reused (BENCHMARKS.md, "The hot path, stage
//! by stage"): each worker thread keeps a small map from the `Arc`'s address to its rendered
//! bytes, holding a `Weak` to it. While that `Weak` lives the allocation cannot be freed, so no
//! other profile can ever appear at that address: an address match is the same profile.

use crate::domain::user::UserProfile;
use crate::support::clock;
use bytes::Bytes;
use std::cell::RefCell;
use std::sync::{Arc, Weak};

/// Profiles remembered per worker thread; beyond it the map starts over. Sized for thousands of
/// users' tokens presented in turn (BENCHMARKS.md, "Forward auth and many tokens").
const REMEMBERED: usize = 16_384;

#[derive(serde::Serialize)]
struct PublicView<'a> {
    created_at: String,
    full_name: &'a str,
    mothers_favorite_search_engine: &'a str,
    totp: &'a str,
    username: &'a str,
}

/// Renders the public view of `profile`.
pub fn render(profile: &UserProfile) -> Bytes {
    let view = PublicView {
        created_at: clock::rfc3339(profile.created_at),
        full_name: profile.full_name.as_str(),
        mothers_favorite_search_engine: profile.mothers_favorite_search_engine.as_str(),
        totp: profile.totp.as_str(),
        username: profile.username.as_typed(),
    };
    Bytes::from(serde_json::to_vec(&view).unwrap_or_default())
}

/// What worker threads render from shared profiles, remembered per `Arc` (see the module's
/// comment for why an address match is the same profile).
pub struct PerProfile<T> {
    /// Keyed by heap addresses, which no client chooses: a fast hash suffices.
    rendered: foldhash::HashMap<usize, (Weak<UserProfile>, T)>,
}

impl<T: Clone> PerProfile<T> {
    pub fn new() -> Self {
        Self {
            rendered: foldhash::HashMap::default(),
        }
    }

    /// `render(profile)`, computed at most once per `Arc` while this map remembers it.
    pub fn get_or_render(
        &mut self,
        profile: &Arc<UserProfile>,
        render: impl FnOnce(&UserProfile) -> T,
    ) -> T {
        let address = Arc::as_ptr(profile).addr();
        if let Some((weak, value)) = self.rendered.get(&address)
            && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(profile))
        {
            return value.clone();
        }
        if self.rendered.len() >= REMEMBERED {
            self.rendered.clear();
        }
        let value = render(profile);
        self.rendered
            .insert(address, (Arc::downgrade(profile), value.clone()));
        value
    }
}

thread_local! {
    static RENDERED: RefCell<PerProfile<Bytes>> = RefCell::new(PerProfile::new());
}

/// The public view of a shared profile, rendered at most once per `Arc` on this thread.
pub fn shared(profile: &Arc<UserProfile>) -> Bytes {
    RENDERED.with_borrow_mut(|rendered| rendered.get_or_render(profile, render))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;
    use crate::domain::profile_text::ProfileText;
    use crate::domain::username::Username;

    fn profile(full_name: &str) -> Arc<UserProfile> {
        Arc::new(UserProfile {
            id: UserId::from_string("u1".into()),
            username: Username::parse("Kvothe").unwrap(),
            full_name: ProfileText::from_stored(full_name.into()),
            mothers_favorite_search_engine: ProfileText::from_stored("Duck Duck Go".into()),
            created_at: 1_764_072_000,
            totp: crate::domain::totp::TotpStatus::Off,
        })
    }

    #[test]
    fn a_shared_profile_is_rendered_once_and_reads_like_a_fresh_render() {
        let shared_profile = profile("Patrick Rothfuss");
        let first = shared(&shared_profile);
        let second = shared(&shared_profile);
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, not a second render"
        );
        assert_eq!(first, render(&shared_profile));
        let json: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(json["created_at"], "2025-11-25T12:00:00Z");
        assert_eq!(json["username"], "Kvothe");
    }

    #[test]
    fn a_new_profile_is_rendered_anew_even_at_a_reused_address() {
        // Drop the first profile entirely, then make many more: allocators reuse addresses,
        // and a stale body must never be served for a different profile.
        let body = shared(&profile("Old Name"));
        assert!(String::from_utf8_lossy(&body).contains("Old Name"));
        for i in 0..64 {
            let name = format!("Name {i}");
            let fresh = profile(&name);
            assert!(String::from_utf8_lossy(&shared(&fresh)).contains(&name));
        }
    }
}
