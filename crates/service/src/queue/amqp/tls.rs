//! The TLS client for `amqps://` addresses: the system's roots plus `AMQP_TLS_CA_FILE`, an
//! optional client certificate, and hostname verification unless explicitly turned off, in which
//! case only `AMQP_TLS_CA_FILE` is trusted.

use std::sync::Arc;

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::ParsedCertificate,
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use secrecy::ExposeSecret;
use tokio_rustls::TlsConnector;

use crate::config::TlsSettings;

/// Why hostname verification cannot be turned off without a CA file of one's own.
const NAMELESS_NEEDS_OWN_CA: &str = "AMQP_TLS_VERIFY_HOSTNAME=false needs AMQP_TLS_CA_FILE: with no name \
    checked, only the authority that signed the broker's certificate may be trusted, not the system's roots \
    (anyone can get a certificate from those for a name of their own)";

/// Builds the connector every `amqps://` connection uses. Errors name the setting at fault; the
/// settings are checked with it at start-up, so a connection meets none of them.
pub fn connector(settings: &TlsSettings) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let own_roots = match &settings.ca_pem {
        Some(pem) => certificates(pem.as_bytes()).map_err(|e| format!("AMQP_TLS_CA_FILE: {e}"))?,
        None => Vec::new(),
    };
    let verifier: Arc<dyn ServerCertVerifier> = if settings.verify_hostname {
        // The platform verifier: the system's trust store, plus the CA file. It takes the file's
        // certificates as given, so they are checked here as trust anchors first.
        trust_anchors(&own_roots)?;
        let platform = if own_roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(own_roots, provider.clone())
        };
        Arc::new(platform.map_err(|e| format!("TLS roots: {e}"))?)
    } else {
        if own_roots.is_empty() {
            return Err(NAMELESS_NEEDS_OWN_CA.to_owned());
        }
        Arc::new(OwnCaAnyName {
            roots: trust_anchors(&own_roots)?,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        // Not a bypass: both verifiers check the chain and the handshake's signature.
        .with_custom_certificate_verifier(verifier);
    let config = match &settings.client {
        Some((cert, key)) => {
            let chain = certificates(cert).map_err(|e| format!("AMQP_TLS_CERT_FILE: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key.expose_secret())
                .map_err(|_| "AMQP_TLS_KEY_FILE: no private key in PEM (PKCS#8, PKCS#1 or SEC1)".to_owned())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("AMQP_TLS_CERT_FILE/AMQP_TLS_KEY_FILE: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The CA file's certificates as trust anchors; one that cannot be one is an error.
fn trust_anchors(certificates: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.iter().enumerate() {
        roots
            .add(certificate.clone())
            .map_err(|e| format!("AMQP_TLS_CA_FILE: certificate {} cannot be a trusted root: {e}", index + 1))?;
    }
    Ok(roots)
}

/// The certificates of a PEM file; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unreadable PEM ({e})"))?;
    if certificates.is_empty() {
        return Err("no certificate in the PEM file".to_owned());
    }
    Ok(certificates)
}

/// Accepts a certificate for any name, signed by the CA file and nothing else: the chain up to
/// one of its roots, the validity dates, the key's use for a server and the handshake's signature
/// are checked exactly as for a name; only the name is not.
#[derive(Debug)]
struct OwnCaAnyName {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OwnCaAnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&certificate, &self.roots, intermediates, now, self.algorithms.all)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
