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

fn render(profile: &UserProfile) -> AccountHeaders {
    AccountHeaders {
        user: visible(profile.username.canonical()),
        name: visible(profile.full_name.as_str()),
        user_id: visible(profile.id.as_str()),
    }
}

/// `text` as a header value of visible ASCII only.
pub fn visible(text: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(text, NOT_VISIBLE).to_string();
    // Percent-encoding with this set leaves only `!`..=`~`, which is always a valid value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_in_any_script_are_percent_encoded_utf8() {
        assert_eq!(visible("kvothe"), "kvothe");
        assert_eq!(visible("Patrick Rothfuss"), "Patrick%20Rothfuss");
        assert_eq!(visible("Zoë 100%"), "Zo%C3%AB%20100%25");
        assert_eq!(
            visible("a\r\nRemote-User: admin"),
            "a%0D%0ARemote-User:%20admin"
        );
        assert_eq!(visible("李小龍"), "%E6%9D%8E%E5%B0%8F%E9%BE%8D");
    }

    proptest! {
        /// Whatever an account holds, its header value is visible ASCII and decodes back to it.
        #[test]
        fn every_value_is_visible_ascii_and_decodes_to_the_text(text in any::<String>()) {
            let value = visible(&text);
            prop_assert!(value.as_bytes().iter().all(|b| (b'!'..=b'~').contains(b)));
            let decoded = percent_encoding::percent_decode(value.as_bytes()).decode_utf8().unwrap();
            prop_assert_eq!(decoded, text);
        }
    }
}
