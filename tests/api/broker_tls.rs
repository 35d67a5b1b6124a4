//! `amqps://` to the test broker through a TLS front with certificates made for the test: which
//! certificates the relay trusts, and settings that stop it at start-up rather than at every
//! connection.

use std::net::SocketAddr;

use crate::{
    backend::TempDir,
    broker::amqp_url,
    certs,
    helpers::SECRET,
    process::{run_to_exit, run_to_exit_with_stdout},
    tls_front::TlsFront,
};

/// The test broker's plain listener, which the fronts pass each connection on to.
fn broker_address() -> SocketAddr {
    let url = url::Url::parse(&amqp_url()).expect("AMQP_URL parses");
    let host = url.host_str().expect("a host");
    std::net::ToSocketAddrs::to_socket_addrs(&(host, url.port().unwrap_or(5672)))
        .expect("the broker's host resolves")
        .next()
        .expect("an address")
}

/// An authority with a server certificate for `localhost`, served by a front of its own.
struct Authority {
    dir: TempDir,
    front: TlsFront,
}

impl Authority {
    async fn new() -> Self {
        let dir = TempDir::new();
        certs::make(&dir.0, "localhost");
        let front = TlsFront::start(&dir.0, broker_address()).await;
        Self { dir, front }
    }

    fn file(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    /// The front's URL with `host` as the name the certificate is checked against.
    fn url(&self, host: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f", self.front.address.port())
    }
}

/// `check`'s line about the broker, and its stderr.
async fn check(env: &[(&str, &str)]) -> (String, String) {
    let (_, stdout, stderr) = run_to_exit_with_stdout(&["check"], env).await;
    let line = stdout.lines().find(|l| l.contains("RabbitMQ at")).unwrap_or_default().to_owned();
    (line, stderr)
}

/// With hostname checks off, a certificate for any name is accepted: it must then come from the
/// operator's own authority. Were the system's roots trusted too, anyone with a certificate from
/// a public authority, for a name of their own, could pose as the broker and take its password.
#[tokio::test]
async fn without_hostname_checks_only_the_ca_file_vouches_for_the_broker() {
    let (own, public) = (Authority::new().await, Authority::new().await);
    let (own_ca, public_ca) = (own.file("ca.pem"), public.file("ca.pem"));
    // The "public" authority stands in for the system's roots.
    let system = ("SSL_CERT_FILE", public_ca.as_str());

    // The system's roots are trusted with the name checked: the stand-in works.
    let url = public.url("localhost");
    let (line, _) = check(&[("AMQP_URL", &url), system]).await;
    assert!(line.starts_with("✓ RabbitMQ at localhost"), "{line}");

    // Reached by an address the certificates do not name, with the checks off.
    let nameless = [("AMQP_TLS_CA_FILE", own_ca.as_str()), ("AMQP_TLS_VERIFY_HOSTNAME", "false"), system];
    let url = own.url("127.0.0.1");
    let (line, stderr) = check(&[&[("AMQP_URL", url.as_str())][..], &nameless].concat()).await;
    assert!(line.starts_with("✓ RabbitMQ at 127.0.0.1"), "the CA file's certificate, any name: {line}");
    assert!(stderr.contains("AMQP_TLS_VERIFY_HOSTNAME=false"), "a warning says so: {stderr}");
    assert!(!stderr.contains("failed to verify"), "a connection that worked logs no failure: {stderr}");
    let url = public.url("127.0.0.1");
    let (line, _) = check(&[&[("AMQP_URL", url.as_str())][..], &nameless].concat()).await;
    assert!(
        // Both test authorities have one name, so the chain fails on the signature.
        line.starts_with("✗ RabbitMQ at 127.0.0.1") && line.contains("invalid peer certificate"),
        "a system root's certificate for another name: {line}"
    );
}

/// Each stops `serve` at once with a line naming the setting, where it would otherwise start and
/// fail every connection while answering 503.
#[tokio::test]
async fn tls_settings_no_connection_could_work_with_stop_start_up() {
    let (own, other) = (Authority::new().await, Authority::new().await);
    let url = own.url("localhost");
    let (ca, cert, key, other_key) =
        (own.file("ca.pem"), own.file("client.pem"), own.file("client.key"), other.file("client.key"));
    let not_a_certificate = own.dir.0.join("broken.pem");
    std::fs::write(&not_a_certificate, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let not_a_certificate = not_a_certificate.display().to_string();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("AMQP_URL", &url), ("AMQP_TLS_VERIFY_HOSTNAME", "false")], "needs AMQP_TLS_CA_FILE"),
        (&[("AMQP_URL", &amqp_url()), ("AMQP_TLS_VERIFY_HOSTNAME", "false")], "AMQP_TLS_VERIFY_HOSTNAME"),
        (&[("AMQP_URL", &url), ("AMQP_TLS_CA_FILE", &not_a_certificate)], "AMQP_TLS_CA_FILE"),
        (
            &[("AMQP_URL", &url), ("AMQP_TLS_VERIFY_HOSTNAME", "false"), ("AMQP_TLS_CA_FILE", &not_a_certificate)],
            "AMQP_TLS_CA_FILE",
        ),
        (
            &[
                ("AMQP_URL", &url),
                ("AMQP_TLS_CA_FILE", &ca),
                ("AMQP_TLS_CERT_FILE", &cert),
                ("AMQP_TLS_KEY_FILE", &other_key),
            ],
            "AMQP_TLS_KEY_FILE",
        ),
    ];
    for (settings, named) in cases {
        let env = [settings, &[("POLYAI_WEBHOOK_SECRET", SECRET)]].concat();
        let (code, stderr) = run_to_exit(&["serve"], &env).await;
        assert_eq!(code, Some(1), "{settings:?}: {stderr}");
        let line = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(line.contains(named), "{settings:?}: the last line names {named}: {stderr}");
        assert!(!stderr.contains("guest:guest"), "{stderr}");
    }

    // The same files, the key the certificate's: it starts (checked by `check`, which exits).
    let (line, _) = check(&[
        ("AMQP_URL", &url),
        ("AMQP_TLS_CA_FILE", &ca),
        ("AMQP_TLS_CERT_FILE", &cert),
        ("AMQP_TLS_KEY_FILE", &key),
    ])
    .await;
    assert!(line.starts_with("✓ RabbitMQ at localhost"), "{line}");
}
