//! Password benchmarks: argon2id at the default parameters, and the enumeration check — login
//! latency for an unknown user vs a known user with a wrong password (both should cost one
//! argon2 verification). Medians are printed side by side from one interleaved run.
#![allow(clippy::indexing_slicing)] // measurement code, not the service

use criterion::Criterion;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tessera::auth::hash_pool::HashPool;
use tessera::auth::{Auth, AuthSettings, Cancellation};
use tessera::domain::lockout::LockoutPolicy;
use tessera::domain::password::{HashParams, Hasher, Password};
use tessera::domain::password_policy::PasswordPolicy;
use tessera::domain::secret::SecretString;
use tessera::domain::user::{NewUser, RegistrationForm};
use tessera::token::{Codec, Keyring, ValidationPolicy};

const PASSWORD: &str = "correct horse battery staple";

fn bench_argon2(c: &mut Criterion) {
    let hasher = Hasher::new(HashParams::default()).unwrap();
    let password = Password::normalize(PASSWORD).unwrap();
    let phc = hasher.hash(&password).unwrap();
    let mut group = c.benchmark_group("argon2id m=19456 t=2 p=1");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.iter(|| hasher.hash(black_box(&password)).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| hasher.verify(black_box(&password), &phc))
    });
    group.finish();
}

fn auth(dir: &std::path::Path) -> Auth {
    let store = tessera::store::open_for_serving(
        &tessera::store::DbLocation::Sqlite(dir.join("bench.db")),
        tessera::store::DEFAULT_DB_TIMEOUT,
        tessera::store::DEFAULT_REPLICA_LEASE,
    )
    .unwrap();
    let policy = ValidationPolicy {
        issuer: "tessera".into(),
        audience: "tessera-api".into(),
        leeway: 30,
        max_lifetime: 3600,
    };
    let codec = Codec::new(Keyring::from_secret("bench", &[7u8; 32]).unwrap(), policy);
    let settings = AuthSettings {
        token_ttl: 3600,
        password_policy: PasswordPolicy::default(),
        // No softlock here: we want every wrong password to reach argon2.
        lockout: LockoutPolicy {
            free_attempts: u32::MAX,
            ..LockoutPolicy::default()
        },
        sessions: tessera::domain::session::SessionPolicy::default(),
    };
    Auth::new(
        store,
        codec,
        HashPool::new(Hasher::new(HashParams::default()).unwrap(), 1, 8, 0).unwrap(),
        settings,
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Interleaves the two cases so machine noise hits both alike, each first in every other pair;
/// prints their medians.
fn enumeration_medians() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth(dir.path());
    let form = RegistrationForm {
        username: "kvothe".into(),
        full_name: "Patrick Rothfuss".into(),
        password: PASSWORD.into(),
        mothers_favorite_search_engine: "Duck Duck Go".into(),
    };
    let user = NewUser::parse(form, &PasswordPolicy::default())
        .map_err(|_| "invalid")
        .unwrap();
    let never = Cancellation::never();
    let now = tessera::support::clock::now;
    auth.register(user, now(), &never).unwrap();
    let wrong_password = SecretString::from("a wrong password here");
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    // Which of the two goes first alternates: whatever the first of a pair leaves behind (caches,
    // the allocator's pages) must not pass for a difference between the cases.
    let time = |name: &str| {
        let started = Instant::now();
        let _ = auth.login(
            name,
            &wrong_password,
            None,
            &Default::default(),
            now(),
            &never,
        );
        started.elapsed()
    };
    for round in 0..120 {
        if round % 2 == 0 {
            unknown.push(time("nobody"));
            wrong.push(time("kvothe"));
        } else {
            wrong.push(time("kvothe"));
            unknown.push(time("nobody"));
        }
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    println!();
    println!("enumeration: login median, unknown user {unknown:.2?}, wrong password {wrong:.2?}");
    println!(
        "enumeration: wrong/unknown = {:.3} (1.0 means indistinguishable by timing)",
        wrong.as_secs_f64() / unknown.as_secs_f64()
    );
}

/// The storage side alone, many samples interleaved: a real account's softlock reservation
/// against the padding write a name without an account pays instead.
fn storage_medians() {
    use tessera::domain::ids::UserId;
    let dir = tempfile::tempdir().unwrap();
    let store = tessera::store::open_for_serving(
        &tessera::store::DbLocation::Sqlite(dir.path().join("bench.db")),
        tessera::store::DEFAULT_DB_TIMEOUT,
        tessera::store::DEFAULT_REPLICA_LEASE,
    )
    .unwrap();
    let id = UserId::random();
    let name = tessera::domain::username::Username::parse("kvothe").unwrap();
    store
        .create_user(&tessera::store::NewAccount {
            id: &id,
            username: &name,
            full_name: "Patrick Rothfuss",
            mothers_favorite_search_engine: "Duck Duck Go",
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            created_at: 0,
        })
        .unwrap();
    let policy = LockoutPolicy {
        free_attempts: u32::MAX,
        ..LockoutPolicy::default()
    };
    let (mut real, mut padded) = (Vec::new(), Vec::new());
    for i in 0..1000 {
        let reserve = || {
            let started = Instant::now();
            let _ = store.reserve_attempt(&id, &policy, i);
            started.elapsed()
        };
        let pad = || {
            let started = Instant::now();
            let _ = store.pad_unknown_attempt(i);
            started.elapsed()
        };
        if i % 2 == 0 {
            real.push(reserve());
            padded.push(pad());
        } else {
            padded.push(pad());
            real.push(reserve());
        }
    }
    let (real, padded) = (median(real), median(padded));
    println!("enumeration (storage only, 1000 each): reservation {real:.2?}, padding {padded:.2?}");
    println!(
        "enumeration (storage only): reservation/padding = {:.3}",
        real.as_secs_f64() / padded.as_secs_f64()
    );
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_argon2(&mut criterion);
    criterion.final_summary();
    enumeration_medians();
    storage_medians();
}
