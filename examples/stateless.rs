//! The stateless peer for end-to-end benchmarks: a hyper server that answers `GET /v1/users/me`
//! by decoding the Bearer token with `jsonwebtoken` (HS256, iss, aud, exp) and checking nothing
//! in storage — what verification costs when revocation is ignored.
//! Usage: `stateless ADDR KEYS_FILE`.
#![allow(clippy::indexing_slicing)] // measurement code, not the service

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use std::convert::Infallible;
use std::sync::Arc;

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

async fn me(
    verifier: Arc<Verifier>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let response = match decode::<Claims>(token, &verifier.key, &verifier.validation) {
        Ok(data) => Response::new(Full::new(Bytes::from(format!(
            "{{\"sub\":\"{}\"}}",
            data.claims.sub
        )))),
        Err(_) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    };
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8082".into());
    let keys = args.next().unwrap_or_else(|| "keys/jwks.json".into());
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(&keys)?)?;
    let secret = URL_SAFE_NO_PAD
        .decode(set["keys"][0]["k"].as_str().unwrap_or_default())
        .map_err(std::io::Error::other)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["tessera"]);
    validation.set_audience(&["tessera-api"]);
    let verifier = Arc::new(Verifier {
        key: DecodingKey::from_secret(&secret),
        validation,
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("stateless listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let verifier = verifier.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| me(verifier.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
