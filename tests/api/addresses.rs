//! Several broker addresses in AMQP_URL: malformed ones stop start-up with one line naming the
//! variable, never the password; a dead address is skipped by the publisher and the consumer alike.

use crate::{
    backend::TempDir,
    broker::amqp_url,
    helpers::{completed, spawn_app_with, Options, SECRET},
    process::run_to_exit,
};

/// An address where nothing listens: connecting to it fails at once.
const DEAD: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

async fn refused(env: &[(&str, &str)], variable: &str) {
    let mut env = env.to_vec();
    env.push(("POLYAI_WEBHOOK_SECRET", SECRET));
    let (code, stderr) = run_to_exit(&["serve"], &env).await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(line.contains(variable), "the last line names {variable}: {stderr}");
    assert!(!stderr.contains("hunter2"), "the password stays out of the error: {stderr}");
}

#[tokio::test]
async fn one_url_with_several_hosts_stops_start_up_naming_the_variable_without_the_password() {
    refused(&[("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:5672,127.0.0.1:5673/%2f")], "AMQP_URL").await;
    refused(&[("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:99999/%2f")], "AMQP_URL").await;
    refused(&[("AMQP_URL", "amqp://guest:hunter2@a/one,amqp://guest:hunter2@b/two")], "AMQP_URL").await;
}

#[tokio::test]
async fn a_malformed_url_from_a_file_names_the_file_variable() {
    let dir = TempDir::new();
    let file = dir.0.join("amqp-url");
    std::fs::write(&file, "amqp://guest:hunter2@127.0.0.1:5672,127.0.0.1:5673/%2f\n").unwrap();
    refused(&[("AMQP_URL_FILE", &file.display().to_string())], "AMQP_URL_FILE").await;
}

#[tokio::test]
async fn tls_files_without_an_amqps_address_are_refused() {
    let dir = TempDir::new();
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
    refused(&[("AMQP_URL", DEAD), ("AMQP_TLS_CA_FILE", &ca.display().to_string())], "AMQP_TLS_CA_FILE").await;
    refused(
        &[("AMQP_URL", "amqps://guest:hunter2@127.0.0.1:1/%2f"), ("AMQP_TLS_CERT_FILE", &ca.display().to_string())],
        "AMQP_TLS_KEY_FILE",
    )
    .await;
}

#[tokio::test]
async fn unusable_tls_files_stop_start_up_naming_their_variable() {
    let dir = TempDir::new();
    let empty = dir.0.join("empty.pem");
    std::fs::write(&empty, "hunter2 is not PEM\n").unwrap();
    let empty = empty.display().to_string();
    let amqps = ("AMQP_URL", "amqps://guest:hunter2@127.0.0.1:1/%2f");
    refused(&[amqps, ("AMQP_TLS_CA_FILE", &empty)], "AMQP_TLS_CA_FILE").await;
    refused(&[amqps, ("AMQP_TLS_CERT_FILE", &empty), ("AMQP_TLS_KEY_FILE", &empty)], "AMQP_TLS_CERT_FILE").await;
    refused(&[amqps, ("AMQP_TLS_CA_FILE", "/nonexistent/ca.pem")], "AMQP_TLS_CA_FILE").await;
}

#[tokio::test]
async fn with_a_dead_first_address_events_are_accepted_and_enriched_through_the_next() {
    let app = spawn_app_with(Options { amqp_url: Some(format!("{DEAD},{}", amqp_url())), ..Options::default() }).await;
    assert_eq!(app.post_signed(&completed("CAfailover")).await.status(), 204);
    // The worker's consumer found the live address too: the record comes out enriched.
    let record = app.next_record().await;
    assert_eq!(record.json["conversation"]["id"], "CAfailover", "{}", record.json);
}
