//! Forward auth: a reverse proxy (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `forwardAuth`, Envoy `ext_authz`) asks before each request of the app it protects. A live
//! token gets 200 and the identity headers the proxy copies onto the app's request; anything
//! else gets the same 401 with the RFC 6750 challenge as every other route, which the proxy
//! relays.
//!
//! Header values are visible ASCII by construction: the text fields are UTF-8 percent-encoded
//! (RFC 3986 §2.1) with every byte outside `!`..=`~`, and `%` itself, escaped — so a full name
//! in any script arrives intact, and no value can carry CR, LF or a control byte whatever an
//! account holds. Ids are base64url and need no encoding.

use super::profile_view::PerProfile;
use super::response::{self, HttpResponse};
use crate::auth::Authenticated;
use crate::domain::user::UserProfile;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::cell::RefCell;

/// The account's name in its canonical form (RFC 8265 case-mapped): unique, stable.
pub const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
/// The account's full name.
pub const REMOTE_NAME: HeaderName = HeaderName::from_static("remote-name");
/// The account's id: never reused, unchanged by anything the user does.
pub const REMOTE_USER_ID: HeaderName = HeaderName::from_static("remote-user-id");
/// The session the token belongs to (what `DELETE /v1/sessions/{id}` ends).
pub const REMOTE_SESSION_ID: HeaderName = HeaderName::from_static("remote-session-id");

/// Escaped in header values: controls, space, DEL and `%`; non-ASCII is always escaped.
const NOT_VISIBLE: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// The headers that depend only on the account, rendered once per shared profile.
#[derive(Clone)]
struct AccountHeaders {
    user: HeaderValue,
    name: HeaderValue,
    user_id: HeaderValue,
}

thread_local! {
    static RENDERED: RefCell<PerProfile<AccountHeaders>> = RefCell::new(PerProfile::new());
}

/// The answer for a caller whose token stands: 200, no body, the identity headers.
pub fn allowed(caller: &Authenticated) -> HttpResponse {
    let account =
        RENDERED.with_borrow_mut(|rendered| rendered.get_or_render(&caller.profile, render));
    let mut response = response::empty(StatusCode::OK);
    let headers = response.headers_mut();
    // Room for these and the standard headers at once: growing the map rehashes it.
    headers.reserve(8);
    headers.append(REMOTE_USER, account.user);
    headers.append(REMOTE_NAME, account.name);
    headers.append(REMOTE_USER_ID, account.user_id);
    // Session ids are base64url, visible ASCII by construction: nothing to encode.
    if let Ok(sid) = HeaderValue::from_str(caller.claims.claims().sid.as_str()) {
        headers.append(REMOTE_SESSION_ID, sid);
    }
    response
}

/// The three values are views of one buffer: a request takes a reference to each, and with
/// thousands of accounts in turn those three references then share one cold cache line
/// (BENCHMARKS.md, "Forward auth and many tokens").
fn render(profile: &UserProfile) -> AccountHeaders {
    let mut all = String::new();
    let mut ends = [0; 3];
    for (text, end) in [
        profile.username.canonical(),
        profile.full_name.as_str(),
        profile.id.as_str(),
    ]
    .into_iter()
    .zip(&mut ends)
    {
        all.extend(utf8_percent_encode(text, NOT_VISIBLE));
        *end = all.len();
    }
    let all = Bytes::from(all);
    let [user, name, user_id] = ends;
    AccountHeaders {
        user: value(all.slice(..user)),
        name: value(all.slice(user..name)),
        user_id: value(all.slice(name..user_id)),
    }
}

/// Percent-encoding with `NOT_VISIBLE` leaves only `!`..=`~`, which is always a valid value.
fn value(encoded: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;
    use crate::domain::profile_text::ProfileText;
    use crate::domain::username::Username;
    use proptest::prelude::*;

    fn account(username: &str, full_name: &str) -> AccountHeaders {
        render(&UserProfile {
            id: UserId::from_string("u1-_x".into()),
            username: Username::parse(username).unwrap(),
            full_name: ProfileText::from_stored(full_name.into()),
            mothers_favorite_search_engine: ProfileText::from_stored("Searx".into()),
            created_at: 1_764_072_000,
            totp: crate::domain::totp::TotpStatus::Off,
        })
    }

    fn full_name(name: &str) -> HeaderValue {
        account("kvothe", name).name
    }

    #[test]
    fn names_in_any_script_are_percent_encoded_utf8() {
        assert_eq!(full_name("kvothe"), "kvothe");
        assert_eq!(full_name("Patrick Rothfuss"), "Patrick%20Rothfuss");
        assert_eq!(full_name("Zoë 100%"), "Zo%C3%AB%20100%25");
        assert_eq!(
            full_name("a\r\nRemote-User: admin"),
            "a%0D%0ARemote-User:%20admin"
        );
        assert_eq!(full_name("李小龍"), "%E6%9D%8E%E5%B0%8F%E9%BE%8D");
    }

    #[test]
    fn each_header_holds_its_own_field_and_nothing_else() {
        let account = account("Zoë", "Zoë 100%");
        assert_eq!(account.user, "zo%C3%AB");
        assert_eq!(account.name, "Zo%C3%AB%20100%25");
        assert_eq!(account.user_id, "u1-_x");
        let empty = self::account("kvothe", "");
        assert_eq!(empty.user, "kvothe");
        assert_eq!(empty.name, "");
        assert_eq!(empty.user_id, "u1-_x");
    }

    proptest! {
        /// Whatever an account holds, its header value is visible ASCII and decodes to it.
        #[test]
        fn every_value_is_visible_ascii_and_decodes_to_the_text(text in any::<String>()) {
            let value = full_name(&text);
            prop_assert!(value.as_bytes().iter().all(|b| (b'!'..=b'~').contains(b)));
            let decoded = percent_encoding::percent_decode(value.as_bytes()).decode_utf8().unwrap();
            prop_assert_eq!(decoded, text);
        }
    }
}
