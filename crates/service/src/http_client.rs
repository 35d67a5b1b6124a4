//! The one way an HTTP client is built, in the relay and in its tools and tests alike.
//!
//! reqwest is built with `rustls-no-provider` (aws-lc's C build was the longest step of a clean
//! build), so a client built before the process has a rustls provider panics. Every builder
//! comes from here, which installs `ring` first.

/// A reqwest client builder, with `ring` installed as the process's TLS provider.
pub fn builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    reqwest::Client::builder()
}

/// Installs `ring` as the process's rustls provider, unless one is installed already (that one
/// stays). Clients built elsewhere, such as the OTLP exporter's, need it before they are built.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
