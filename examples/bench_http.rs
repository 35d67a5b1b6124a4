//! The benchmark's bare HTTP baseline (bench/run.sh): an axum handler that reads the body,
//! verifies the HMAC with the relay's own verifier and answers 204, with no broker, no logging
//! and no metrics. What a webhook costs before the relay does anything of its own.
//!
//! `bench_http <listen> <secret>`, e.g. `bench_http 127.0.0.1:18082 whsec_bench`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use polyai_relay::signature::{SecretSlot, SignatureScheme, UnverifiedEvent, Verifier};
use secrecy::SecretString;

async fn receive(State(verifier): State<Arc<Verifier>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let event =
        UnverifiedEvent { body, signature: header("x-polyai-signature"), timestamp: header("x-polyai-timestamp") };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default() as i64;
    match verifier.verify(event, now) {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, secret] = args.as_slice() else { anyhow::bail!("usage: bench_http <listen> <secret>") };
    let secrets = [(SecretSlot::Current, SecretString::from(secret.clone()))];
    let verifier = Arc::new(Verifier::new(&secrets, SignatureScheme::Auto, Duration::from_secs(300)));
    let router = Router::new().route("/polyai-events", post(receive)).with_state(verifier);
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    axum::serve(listener, router).await?;
    Ok(())
}
