//! The keyring: HMAC keys kept in a JWK Set file (RFC 7517 §5), `kty` = `oct` (RFC 7518 §6.4).
//!
//! The **first** key in the set signs; every key verifies. Rotation without downtime is therefore:
//! `keys rotate` (a new key goes first and signs; the old one still verifies), then, once the
//! longest token lifetime has passed, `keys retire OLD_KID`. Keys are looked up by `kid` in memory
//! only — a `kid` never reaches a path, a query or a URL (RFC 8725 §3.10).

use crate::crypto::random;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize as _, Zeroizing};

pub type HmacSha256 = Hmac<Sha256>;

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output, 256 bits.
pub const MIN_KEY_BYTES: usize = 32;
/// New keys are exactly that: 256 bits from the OS CSPRNG.
const NEW_KEY_BYTES: usize = 32;

/// One JWK as stored on disk.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    pub kty: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
    /// The key bytes, base64url without padding (RFC 7518 §6.4.1).
    pub k: String,
    /// When the key started signing, by a rotation or a promotion (Unix seconds; a private JWK
    /// member, RFC 7517 §4). The key behind it stopped signing at that moment, which is what
    /// `retire` checks. `None` for a key added to verify only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

impl fmt::Debug for Jwk {
    // Never print `k`: Debug output ends up in logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Drop for Jwk {
    /// The key text is wiped when the JWK goes away (after loading, rotating or saving).
    fn drop(&mut self) {
        self.k.zeroize();
    }
}

/// A JWK Set file's contents. Carries keys, so its Debug is written out: key ids only.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl fmt::Debug for JwkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| &key.kid))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a valid JWK Set: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("key file {path} has no keys, so nothing can sign tokens")]
    NoSigningKey { path: PathBuf },
    #[error("key file {path} already exists; use `tessera keys rotate` to add a key")]
    AlreadyExists { path: PathBuf },
    #[error("no key with kid {kid:?}")]
    UnknownKid { kid: String },
    #[error("key {kid:?} is the signing key; rotate first, then retire it")]
    RetiringSigningKey { kid: String },
    #[error(
        "tokens signed with key {kid:?} may still be live: they live one token lifetime past the last moment a server may have signed with it (the rotation in the key file, or the servers' record in the database, whichever is later). Retry in {wait} s, or pass --force to kill them now"
    )]
    RetiringTooSoon { kid: String, wait: i64 },
    #[error(
        "cannot tell when key {kid:?} stopped signing (the key after it has no `iat`); pass --force once the longest token lifetime has passed since that rotation"
    )]
    RetiringUnknownAge { kid: String },
}

/// Summary of a key for `tessera keys list`: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub signing: bool,
    pub bits: usize,
}

impl JwkSet {
    /// Reads a JWK Set, refusing files that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let metadata = fs::metadata(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.into(),
                mode,
            });
        }
        let text = fs::read(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| KeyError::Invalid {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// A set holding one fresh signing key.
    pub fn generate() -> Self {
        Self {
            keys: vec![new_jwk(None)],
        }
    }

    /// Adds a fresh key in front, so it signs from `now` on; returns its kid.
    pub fn rotate(&mut self, now: i64) -> String {
        let key = new_jwk(Some(now));
        let kid = key.kid.clone();
        self.keys.insert(0, key);
        kid
    }

    /// Adds a fresh key at the end, to verify only; returns its kid. The first step of a
    /// rotation across replicas: every replica learns the key before any signs with it.
    pub fn add(&mut self) -> String {
        let key = new_jwk(None);
        let kid = key.kid.clone();
        self.keys.push(key);
        kid
    }

    /// Moves a key in front, so it signs from `now` on: the second step, once every replica
    /// verifies it. The key that signed before keeps verifying until retired.
    pub fn promote(&mut self, kid: &str, now: i64) -> Result<(), KeyError> {
        let index = self.position(kid)?;
        if index == 0 {
            return Ok(());
        }
        let mut key = self.keys.remove(index);
        key.iat = Some(now);
        self.keys.insert(0, key);
        Ok(())
    }

    /// Removes a key that no longer signs; tokens it signed stop verifying at once. Unless
    /// `force`, refuses while tokens it signed may still be live: until `token_lifetime` has
    /// passed since the last moment any server may have signed with it — the later of the
    /// rotation that ended its signing in this file and `signed_until`, the servers' own record
    /// (a server that had not yet loaded this file kept signing with it) — or when neither is
    /// known.
    pub fn retire(
        &mut self,
        kid: &str,
        now: i64,
        token_lifetime: i64,
        force: bool,
        signed_until: Option<i64>,
    ) -> Result<(), KeyError> {
        let index = self.position(kid)?;
        let Some(successor) = index.checked_sub(1).and_then(|i| self.keys.get(i)) else {
            return Err(KeyError::RetiringSigningKey { kid: kid.into() });
        };
        if !force {
            let Some(stopped_signing) = successor.iat.max(signed_until) else {
                return Err(KeyError::RetiringUnknownAge { kid: kid.into() });
            };
            let safe_from = stopped_signing.saturating_add(token_lifetime);
            if now < safe_from {
                return Err(KeyError::RetiringTooSoon {
                    kid: kid.into(),
                    wait: safe_from - now,
                });
            }
        }
        self.keys.remove(index);
        Ok(())
    }

    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .enumerate()
            .map(|(index, key)| KeyInfo {
                kid: key.kid.clone(),
                signing: index == 0,
                bits: decode_key(&key.k).map_or(0, |bytes| bytes.len() * 8),
            })
            .collect()
    }

    /// Writes the set atomically (temp file + rename) with mode 0600 from the first byte on.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let write_error = |source| KeyError::Write {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write_error)?;
        }
        let temp = path.with_extension(format!("tmp-{}", random::base64url_id::<6>()));
        let json = serde_json::to_vec_pretty(self).map_err(|e| write_error(e.into()))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(write_error)?;
        file.write_all(&json)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&temp, path))
            .map_err(|e| {
                let _ = fs::remove_file(&temp);
                write_error(e)
            })
    }

    /// Creates a new key file; refuses to overwrite an existing one.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Err(KeyError::AlreadyExists { path: path.into() });
        }
        let set = Self::generate();
        set.save(path)?;
        Ok(set)
    }

    fn position(&self, kid: &str) -> Result<usize, KeyError> {
        self.keys
            .iter()
            .position(|k| k.kid == kid)
            .ok_or_else(|| KeyError::UnknownKid { kid: kid.into() })
    }
}

fn new_jwk(iat: Option<i64>) -> Jwk {
    Jwk {
        kty: "oct".into(),
        kid: random::base64url_id::<9>(),
        alg: "HS256".into(),
        use_: "sig".into(),
        k: URL_SAFE_NO_PAD.encode(random::bytes::<NEW_KEY_BYTES>()),
        iat,
    }
}

fn decode_key(k: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(k).ok()
}

/// A key ready for use: its MAC already keyed, and the exact header bytes it signs under.
pub(super) struct KeyEntry {
    pub(super) kid: String,
    /// HMAC state after absorbing the key; cloning it skips re-keying on every token.
    pub(super) mac: HmacSha256,
    /// `base64url({"alg":"HS256","typ":"at+jwt","kid":"<kid>"})`, our canonical header segment.
    pub(super) header_segment: String,
    /// Keyed with HMAC(key, [`super::refresh::KEY_LABEL`]): refresh-token tags only.
    pub(super) refresh_mac: HmacSha256,
}

/// Verified, in-memory keys: one that signs (the file's first) and older ones that only verify.
/// A keyring without a signing key cannot be built.
pub struct Keyring {
    signing: KeyEntry,
    verify_only: Vec<KeyEntry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.kids().collect();
        f.debug_struct("Keyring").field("kids", &kids).finish()
    }
}

impl Keyring {
    /// Loads and checks a key file (permissions, then every key). Fails closed.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_set(&JwkSet::load(path)?, path)
    }

    /// Checks every key of `set`; `source` names it in error messages.
    pub fn from_set(set: &JwkSet, source: &Path) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            path: source.into(),
            reason,
        };
        let mut keys: Vec<KeyEntry> = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let kid = &jwk.kid;
            if jwk.kty != "oct" || jwk.alg != "HS256" || jwk.use_ != "sig" {
                return Err(invalid(format!(
                    "key {kid:?} must have kty \"oct\", alg \"HS256\" and use \"sig\""
                )));
            }
            if !is_valid_kid(kid) {
                return Err(invalid(format!(
                    "kid {kid:?} must be 1-64 characters of [A-Za-z0-9_-]"
                )));
            }
            if keys.iter().any(|k| &k.kid == kid) {
                return Err(invalid(format!("kid {kid:?} appears twice")));
            }
            let secret = decode_key(&jwk.k)
                .map(Zeroizing::new)
                .ok_or_else(|| invalid(format!("key {kid:?}: `k` is not base64url")))?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(invalid(format!(
                    "key {kid:?} is {} bits; HS256 needs at least {} (RFC 7518 §3.2)",
                    secret.len() * 8,
                    MIN_KEY_BYTES * 8
                )));
            }
            keys.push(KeyEntry::new(kid, &secret));
        }
        let mut keys = keys.into_iter();
        let signing = keys.next().ok_or_else(|| KeyError::NoSigningKey {
            path: source.into(),
        })?;
        Ok(Self {
            signing,
            verify_only: keys.collect(),
        })
    }

    /// A keyring around one raw secret: for tests, benchmarks and tools.
    pub fn from_secret(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        let jwk = Jwk {
            kty: "oct".into(),
            kid: kid.into(),
            alg: "HS256".into(),
            use_: "sig".into(),
            k: URL_SAFE_NO_PAD.encode(secret),
            iat: None,
        };
        Self::from_set(&JwkSet { keys: vec![jwk] }, Path::new("<in-memory key>"))
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing.kid
    }

    /// Each key's id with a fingerprint of its bytes: HMAC-SHA256 of a fixed label under the
    /// key, base64url. It identifies the key material without revealing it, so replicas can
    /// check through the database that one kid means one key everywhere.
    pub fn fingerprints(&self) -> Vec<(String, String)> {
        self.entries()
            .map(|key| {
                let mut mac = key.mac.clone();
                mac.update(b"tessera key fingerprint v1");
                let tag: [u8; 32] = mac.finalize().into_bytes().into();
                (key.kid.clone(), URL_SAFE_NO_PAD.encode(tag))
            })
            .collect()
    }

    /// A 256-bit key for another purpose than signing, derived from key `kid`:
    /// HMAC-SHA256(key, `label`) — HKDF-Expand's single block with the key as the pseudorandom
    /// key, one label per purpose, so no key serves two. `None` if `kid` is not in the keyring.
    pub fn derive(&self, kid: &str, label: &[u8]) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        let key = self.by_kid(kid)?;
        let mut mac = key.mac.clone();
        mac.update(label);
        Some(zeroize::Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|k| k.kid.as_str())
    }

    pub(super) fn signing_key(&self) -> &KeyEntry {
        &self.signing
    }

    /// Every key, the signing one first.
    pub(super) fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        std::iter::once(&self.signing).chain(&self.verify_only)
    }

    pub(super) fn by_header_segment(&self, segment: &[u8]) -> Option<&KeyEntry> {
        self.entries()
            .find(|k| k.header_segment.as_bytes() == segment)
    }

    pub(super) fn by_kid(&self, kid: &str) -> Option<&KeyEntry> {
        self.entries().find(|k| k.kid == kid)
    }
}

impl KeyEntry {
    #[allow(clippy::expect_used)]
    fn new(kid: &str, secret: &[u8]) -> Self {
        let header = super::canonical_header(kid);
        // HMAC accepts keys of any length; these cannot fail.
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        let mut derive = mac.clone();
        derive.update(super::refresh::KEY_LABEL);
        let refresh_key = Zeroizing::new(<[u8; 32]>::from(derive.finalize().into_bytes()));
        Self {
            kid: kid.into(),
            mac,
            header_segment: URL_SAFE_NO_PAD.encode(header),
            refresh_mac: HmacSha256::new_from_slice(refresh_key.as_slice())
                .expect("HMAC takes any key length"),
        }
    }
}

fn is_valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_256_bit_and_first_signs() {
        let mut set = JwkSet::generate();
        let first = set.keys[0].kid.clone();
        let second = set.rotate(1_000);
        let info = set.list();
        assert_eq!(info.len(), 2);
        assert_eq!(info[0].kid, second);
        assert!(info[0].signing && !info[1].signing);
        assert!(info.iter().all(|k| k.bits == 256));
        assert_eq!(info[1].kid, first);
    }

    #[test]
    fn saved_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let set = JwkSet::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.signing_kid(), set.keys[0].kid);
        assert!(matches!(
            JwkSet::create(&path),
            Err(KeyError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn group_readable_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        JwkSet::create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = Keyring::load(&path).unwrap_err();
        assert!(matches!(error, KeyError::Permissions { mode: 0o640, .. }));
        assert!(error.to_string().contains("jwks.json"));
    }

    #[test]
    fn short_keys_empty_sets_and_wrong_types_fail_closed() {
        let path = Path::new("test.json");
        let mut set = JwkSet::generate();
        set.keys[0].k = URL_SAFE_NO_PAD.encode([1u8; 31]);
        let error = Keyring::from_set(&set, path).unwrap_err().to_string();
        assert!(error.contains("248 bits"), "{error}");

        assert!(matches!(
            Keyring::from_set(&JwkSet::default(), path),
            Err(KeyError::NoSigningKey { .. })
        ));

        let mut set = JwkSet::generate();
        set.keys[0].alg = "HS512".into();
        assert!(Keyring::from_set(&set, path).is_err());

        let mut set = JwkSet::generate();
        set.keys[0].kid = "../../dev/null".into();
        assert!(Keyring::from_set(&set, path).is_err());
    }

    #[test]
    fn add_then_promote_rotates_without_a_moment_of_unknown_signatures() {
        let mut set = JwkSet::generate();
        let old = set.keys[0].kid.clone();
        let new = set.add();
        let listed = set.list();
        assert_eq!(
            (listed[0].kid.as_str(), listed[0].signing),
            (old.as_str(), true)
        );
        assert_eq!(
            (listed[1].kid.as_str(), listed[1].signing),
            (new.as_str(), false)
        );
        set.promote(&new, 1_000).unwrap();
        assert_eq!(set.keys[0].kid, new);
        assert_eq!(set.keys[0].iat, Some(1_000), "signing since the promotion");
        assert_eq!(set.keys[1].kid, old);
        // The old key retires one token lifetime after the promotion.
        assert!(set.clone().retire(&old, 1_500, 900, false, None).is_err());
        set.retire(&old, 1_900, 900, false, None).unwrap();
        assert!(JwkSet::generate().promote("nope", 0).is_err());
    }

    #[test]
    fn retire_refuses_the_signing_key_and_unknown_kids() {
        let mut set = JwkSet::generate();
        let old = set.keys[0].kid.clone();
        assert!(matches!(
            set.retire(&old, 0, 3600, false, None),
            Err(KeyError::RetiringSigningKey { .. })
        ));
        set.rotate(1_000);
        set.retire(&old, 1_000 + 3600, 3600, false, None).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(matches!(
            set.retire("nope", 0, 3600, true, None),
            Err(KeyError::UnknownKid { .. })
        ));
    }

    /// A key is retired only once every token it signed has expired — one token lifetime past
    /// the last moment a server may have signed with it — unless forced.
    #[test]
    fn retire_waits_one_token_lifetime_after_the_rotation_unless_forced() {
        let mut set = JwkSet::generate();
        let old = set.keys[0].kid.clone();
        set.rotate(1_000);
        assert!(matches!(
            set.retire(&old, 1_001, 3600, false, None),
            Err(KeyError::RetiringTooSoon { wait: 3599, .. })
        ));
        // A server recorded signing with it until 2_000 (it had not reloaded the file yet):
        // the wait counts from there.
        assert!(matches!(
            set.clone().retire(&old, 4_601, 3600, false, Some(2_000)),
            Err(KeyError::RetiringTooSoon { wait: 999, .. })
        ));
        set.clone()
            .retire(&old, 5_600, 3600, false, Some(2_000))
            .unwrap();
        // An earlier record than the rotation changes nothing.
        set.clone()
            .retire(&old, 4_600, 3600, false, Some(500))
            .unwrap();
        set.retire(&old, 1_001, 3600, true, None).unwrap();
        // A rotation from before keys carried `iat`: the age is unknown, so only --force.
        let mut set = JwkSet::generate();
        let old = set.keys[0].kid.clone();
        set.rotate(1_000);
        set.keys[0].iat = None;
        assert!(matches!(
            set.clone().retire(&old, i64::MAX, 3600, false, None),
            Err(KeyError::RetiringUnknownAge { .. })
        ));
        // The servers' record alone is enough.
        set.retire(&old, 1_000 + 3600, 3600, false, Some(1_000))
            .unwrap();
    }

    #[test]
    fn debug_output_never_shows_key_bytes() {
        let set = JwkSet::generate();
        let printed = format!("{set:?}");
        assert!(!printed.contains(&set.keys[0].k));
        assert!(printed.contains(&set.keys[0].kid));
        let ring = Keyring::from_set(&set, Path::new("x")).unwrap();
        assert!(!format!("{ring:?}").contains(&set.keys[0].k));
        assert!(format!("{ring:?}").contains(&set.keys[0].kid), "{ring:?}");
        let key = format!("{:?}", set.keys[0]);
        assert!(key.contains(&set.keys[0].kid), "{key}");
        assert!(!key.contains(&set.keys[0].k), "{key}");
    }

    #[test]
    fn fingerprints_name_each_key_by_its_material_alone() {
        let mut set = JwkSet::generate();
        let older = set.keys[0].kid.clone();
        let newer = set.rotate(1_000);
        let ring = Keyring::from_set(&set, Path::new("x")).unwrap();
        assert_eq!(
            ring.kids().collect::<Vec<_>>(),
            [newer.as_str(), older.as_str()]
        );
        let prints = ring.fingerprints();
        let kids: Vec<_> = prints.iter().map(|(kid, _)| kid.as_str()).collect();
        assert_eq!(kids, [newer.as_str(), older.as_str()]);
        assert_ne!(prints[0].1, prints[1].1, "two keys, two fingerprints");
        assert!(
            prints.iter().all(|(_, print)| print.len() == 43),
            "{prints:?}"
        );
        assert!(
            set.keys
                .iter()
                .all(|key| prints.iter().all(|(_, p)| *p != key.k))
        );
        // The same material under the same kid prints the same everywhere.
        let again = Keyring::from_set(&set, Path::new("y")).unwrap();
        assert_eq!(again.fingerprints(), prints);
        let secret = decode_key(&set.keys[0].k).unwrap();
        let same = Keyring::from_secret(&newer, &secret).unwrap();
        assert_eq!(same.fingerprints(), prints[..1]);
    }

    #[test]
    fn saving_into_a_directory_not_yet_made_makes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/tessera/jwks.json");
        let set = JwkSet::create(&path).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().signing_kid(), set.keys[0].kid);
    }
}
