//! Codec benchmarks, side by side in one run: our verify vs `jsonwebtoken` decode+validate vs the
//! floor (pre-keyed HMAC + base64url decode + claims parse), and encode vs `jsonwebtoken`.
//! Prints the ratios the targets are stated in (BENCHMARKS.md).
#![allow(clippy::indexing_slicing)] // measurement code, not the service

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use tessera::token::{Claims, Codec, Keyring, ValidationPolicy};

const SECRET: [u8; 32] = *b"benchmark-secret-benchmark-secre";
const NOW: i64 = 1_764_000_000;

#[derive(serde::Serialize, serde::Deserialize)]
#[allow(dead_code)]
struct JwtClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    sid: String,
    r#gen: u64,
    amr: Vec<String>,
}

fn codec() -> Codec {
    let policy = ValidationPolicy {
        issuer: "tessera".into(),
        audience: "tessera-api".into(),
        leeway: 30,
        max_lifetime: 3600,
    };
    Codec::new(Keyring::from_secret("bench-key", &SECRET).unwrap(), policy)
}

fn claims() -> Claims {
    Claims {
        iss: "tessera".into(),
        aud: "tessera-api".into(),
        sub: tessera::domain::ids::UserId::from_string("Ibe-mlq6Vrc_p1FJYaRCnA".into()),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        jti: tessera::domain::ids::TokenId::from_string("OjuksHr3oQJyp9QQcC7xmg".into()),
        sid: tessera::domain::ids::SessionId::from_string("f3Qp9sVh0kXbW2mZr8LcTA".into()),
        r#gen: 0,
        amr: tessera::domain::session::Factors::Password,
    }
}

fn bench_verify(c: &mut Criterion) {
    let codec = codec();
    let token = codec.sign(&claims());
    // jsonwebtoken validates exp against the real clock: give it a token valid now.
    let now = tessera::support::clock::now();
    let live = codec.sign(&Claims {
        iat: now,
        nbf: now,
        exp: now + 3600,
        ..claims()
    });
    let key = jsonwebtoken::DecodingKey::from_secret(&SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["tessera"]);
    validation.set_audience(&["tessera-api"]);
    let keyed = Hmac::<Sha256>::new_from_slice(&SECRET).unwrap();
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let payload = signing_input.split('.').nth(1).unwrap().to_owned();
    let signing_input = signing_input.to_owned();

    let mut group = c.benchmark_group("verify");
    group.bench_function("tessera", |b| {
        b.iter(|| codec.verify(black_box(&token), NOW + 1).unwrap())
    });
    // The request path: the same token's second and later uses (token/recent.rs).
    group.bench_function("tessera-cached", |b| {
        b.iter(|| codec.verify_cached(black_box(&token), NOW + 1).unwrap())
    });
    group.bench_function("jsonwebtoken", |b| {
        b.iter(|| jsonwebtoken::decode::<JwtClaims>(black_box(&live), &key, &validation).unwrap())
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(signing_input.as_bytes()));
            let tag = mac.finalize().into_bytes();
            let bytes = URL_SAFE_NO_PAD.decode(black_box(&payload)).unwrap();
            let parsed: JwtClaims = serde_json::from_slice(&bytes).unwrap();
            (tag, parsed)
        })
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let codec = codec();
    let claims = claims();
    let jwt_claims = JwtClaims {
        iss: claims.iss.clone(),
        aud: claims.aud.clone(),
        sub: claims.sub.to_string(),
        iat: claims.iat,
        nbf: claims.nbf,
        exp: claims.exp,
        jti: claims.jti.to_string(),
        sid: claims.sid.to_string(),
        r#gen: claims.r#gen,
        amr: claims.amr.amr().iter().map(|m| (*m).to_owned()).collect(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("bench-key".into());
    let key = jsonwebtoken::EncodingKey::from_secret(&SECRET);

    let mut group = c.benchmark_group("encode");
    group.bench_function("tessera", |b| b.iter(|| codec.sign(black_box(&claims))));
    group.bench_function("jsonwebtoken", |b| {
        b.iter(|| jsonwebtoken::encode(&header, black_box(&jwt_claims), &key).unwrap())
    });
    group.finish();
}

/// Criterion's median estimate for one benchmark of this run, in nanoseconds.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let path = Path::new("target/criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

fn print_ratios() {
    let get = |g, n| median_ns(g, n).unwrap_or(f64::NAN);
    let (ours, theirs, floor) = (
        get("verify", "tessera"),
        get("verify", "jsonwebtoken"),
        get("verify", "floor"),
    );
    let (enc_ours, enc_theirs) = (get("encode", "tessera"), get("encode", "jsonwebtoken"));
    let cached = get("verify", "tessera-cached");
    println!();
    println!(
        "codec medians: verify tessera {ours:.0} ns, jsonwebtoken {theirs:.0} ns, floor {floor:.0} ns"
    );
    println!("               verify_cached (a token's later uses) {cached:.0} ns");
    println!("               encode tessera {enc_ours:.0} ns, jsonwebtoken {enc_theirs:.0} ns");
    println!(
        "verify throughput vs jsonwebtoken: {:.2}x (target >= 2.5x)",
        theirs / ours
    );
    println!(
        "verify time vs floor: {:.2}x (target <= 1.3x)",
        ours / floor
    );
    println!(
        "encode throughput vs jsonwebtoken: {:.2}x (target >= 1.5x)",
        enc_theirs / enc_ours
    );
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_verify(&mut criterion);
    bench_encode(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
