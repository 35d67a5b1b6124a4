//! The TLS client for `amqps://` addresses: the system's roots plus `AMQP_TLS_CA_FILE`, an
//! optional client certificate, and hostname verification unless explicitly turned off.

use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use secrecy::ExposeSecret;
use tokio_rustls::TlsConnector;

use crate::config::TlsSettings;

/// Builds the connector every `amqps://` connection uses. Errors name the setting at fault.
pub fn connector(settings: &TlsSettings) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra_roots = match &settings.ca_pem {
        Some(pem) => certificates(pem.as_bytes()).map_err(|e| format!("AMQP_TLS_CA_FILE: {e}"))?,
        None => Vec::new(),
    };
    // The platform verifier: the system's trust store, plus the CA file.
    let system = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
    }
    .map_err(|e| format!("TLS roots: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> =
        if settings.verify_hostname { Arc::new(system) } else { Arc::new(AnyHostname(Arc::new(system))) };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        // Not a bypass: the platform verifier checks the chain; `AnyHostname` only when asked.
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

/// Accepts a certificate for another name than the URL's host, and nothing else: the chain, the
/// validity dates and the signatures are still checked by the wrapped verifier, which checks the
/// name last (so a name error means everything before it passed).
#[derive(Debug)]
struct AnyHostname(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
