//! TLS against a real listener: a private node that speaks only `amqps://` and requires a client
//! certificate, with certificates made for the test.

use std::time::Duration;

use crate::{
    certs,
    helpers::{http, post_event, SECRET},
    node::{free_port, Node, Site},
    process::{run_to_exit_with_stdout, RelayProcess},
};

fn tls_node(site: &Site) -> Node {
    let certs = site.dir.join("certs");
    // The server's certificate names `localhost` only: 127.0.0.1 is another name.
    certs::make(&certs, "localhost");
    let port = free_port();
    let c = certs.display();
    let listeners = format!(
        "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n\
         ssl_options.cacertfile = {c}/ca.pem\nssl_options.certfile = {c}/server.pem\nssl_options.keyfile = {c}/server.key\n\
         ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n"
    );
    Node::start(site, "tls", port, &listeners)
}

/// The `check` line about the broker, and the whole stderr.
async fn check(env: &[(&str, String)]) -> (String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, stdout, stderr) = run_to_exit_with_stdout(&["check"], &env).await;
    let line = stdout.lines().find(|l| l.contains("RabbitMQ at")).unwrap_or_default().to_owned();
    (line, stderr)
}

#[tokio::test]
async fn amqps_with_a_custom_ca_and_a_client_certificate_reaches_a_tls_only_broker() {
    let site = Site::new();
    let node = tls_node(&site);
    let certs = site.dir.join("certs");
    let file = |name: &str| certs.join(name).display().to_string();
    let url = node.url("amqps", "localhost");
    let full = vec![
        ("AMQP_URL", url.clone()),
        ("AMQP_TLS_CA_FILE", file("ca.pem")),
        ("AMQP_TLS_CERT_FILE", file("client.pem")),
        ("AMQP_TLS_KEY_FILE", file("client.key")),
    ];

    // The relay itself: ready, and a webhook confirmed by the broker over TLS.
    let mut env: Vec<(&str, &str)> = full.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("POLYAI_WEBHOOK_SECRET", SECRET));
    let mut relay = RelayProcess::spawn(&["serve"], &env).await;
    relay.wait_ready().await;
    let (_, status) = post_event(&http(), &relay.url("/polyai-events"), "evt-tls".into()).await;
    assert_eq!(status, Some(204), "{}", relay.logs());
    relay.terminate();
    assert_eq!(relay.wait_for_exit(Duration::from_secs(10)).await, Some(0));

    let host = format!("localhost:{}", node.port);
    let (line, _) = check(&full).await;
    assert!(line.starts_with(&format!("✓ RabbitMQ at {host}")), "{line}");

    // Without the client certificate, the broker hangs up.
    let (line, _) = check(&full[..2]).await;
    assert!(line.starts_with(&format!("✗ RabbitMQ at {host}")), "{line}");

    // Without the CA, the broker's certificate is from nobody the relay trusts.
    let no_ca = [full[0].clone(), full[2].clone(), full[3].clone()];
    let (line, _) = check(&no_ca).await;
    assert!(line.starts_with(&format!("✗ RabbitMQ at {host}")) && line.contains("UnknownIssuer"), "{line}");

    // Reached as 127.0.0.1, a name the certificate does not carry: refused, unless turned off.
    let mut by_ip = full.clone();
    by_ip[0].1 = node.url("amqps", "127.0.0.1");
    let (line, _) = check(&by_ip).await;
    assert!(line.starts_with("✗ RabbitMQ at 127.0.0.1") && line.contains("not valid for name"), "{line}");
    by_ip.push(("AMQP_TLS_VERIFY_HOSTNAME", "false".into()));
    let (line, stderr) = check(&by_ip).await;
    assert!(line.starts_with("✓ RabbitMQ at 127.0.0.1"), "{line}");
    assert!(stderr.contains("AMQP_TLS_VERIFY_HOSTNAME=false"), "a warning says so: {stderr}");
}
