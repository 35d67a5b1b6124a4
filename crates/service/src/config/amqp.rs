//! Where RabbitMQ is, how to reach it (one or several addresses, and TLS), and the largest
//! message it takes.
//!
//! Several addresses are several full URLs separated by commas (the nodes of one cluster, or
//! the same cluster behind several load balancers); a connection tries them in turn. A URL is
//! never printed: it holds a password.

use std::{path::Path, str::FromStr};

use lapin::uri::{AMQPScheme, AMQPUri};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::ConfigError;

/// RabbitMQ's addresses and TLS settings, validated.
#[derive(Debug, Clone)]
pub struct AmqpTarget {
    /// Full `amqp://` or `amqps://` URLs, tried in turn; never empty.
    pub addresses: Vec<SecretString>,
    pub tls: TlsSettings,
    /// Bytes of one message body at most (`RELAY_BROKER_MAX_MESSAGE`, the broker's
    /// `max_message_size`): the publisher refuses a larger one instead of sending it, since the
    /// broker would close the shared channel over it (see [`super::broker_limit`]).
    pub max_message: usize,
}

/// TLS for `amqps://` addresses. With nothing set: the system's roots, hostname verified.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Extra trusted roots (PEM), on top of the system's; the only ones without hostname checks.
    pub ca_pem: Option<String>,
    /// Client certificate chain (PEM) and its private key (PEM), for brokers that require one.
    pub client: Option<(Vec<u8>, SecretSlice<u8>)>,
    /// Off only by an explicit setting, with `ca_pem` and a warning: anything that CA signed
    /// could then pose as the broker.
    pub verify_hostname: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self { ca_pem: None, client: None, verify_hostname: true }
    }
}

impl AmqpTarget {
    /// One address, no TLS files, the default message limit: what tests and single-node set-ups use.
    pub fn single(url: SecretString) -> Self {
        Self { addresses: vec![url], tls: TlsSettings::default(), max_message: super::defaults::broker_max_message() }
    }

    /// Whether any address asks for TLS.
    pub fn uses_tls(&self) -> bool {
        self.addresses.iter().any(|url| url.expose_secret().trim_start().starts_with("amqps://"))
    }
}

/// Splits and checks `text`, given in `variable` (`AMQP_URL` or `AMQP_URL_FILE`). Errors name the
/// variable and the address's position, never its text.
pub fn parse_addresses(variable: &'static str, text: &SecretString) -> Result<Vec<SecretString>, ConfigError> {
    let mut addresses = Vec::new();
    let mut vhost = None;
    let mut scheme = None;
    for (index, piece) in text.expose_secret().split(',').map(str::trim).enumerate() {
        let position = index + 1;
        if piece.is_empty() {
            continue;
        }
        if !(piece.starts_with("amqp://") || piece.starts_with("amqps://")) {
            let message = if index == 0 {
                format!("{variable} must start with amqp:// or amqps://")
            } else {
                format!(
                    "{variable}: address {position} is not a full URL. Several addresses are full URLs separated by \
                     commas (amqp://user:pass@host1:5672/vhost,amqp://user:pass@host2:5672/vhost), not one URL with \
                     several host:port; a comma in a password is written %2C"
                )
            };
            return Err(ConfigError::new(variable, message));
        }
        // A `/`, `?` or `#` written as is in the user name or password ends the URL's authority
        // there: `amqp://relay:4711/x@broker/v` parses as host `relay`, port 4711, and every
        // connection error would then show the user and the password's first part as the host.
        if credentials_unescaped(piece) {
            return Err(ConfigError::new(
                variable,
                format!(
                    "{variable}: address {position} has an `@` after its host: a `/`, `?` or `#` in the user name or \
                     password is written %2F, %3F or %23, and an `@` in the vhost or a query %40"
                ),
            ));
        }
        // The parser's messages can quote the input, password included: only its position is said.
        let uri = AMQPUri::from_str(piece).map_err(|_| {
            ConfigError::new(
                variable,
                format!("{variable}: address {position} is not a valid AMQP URL (amqp[s]://user:pass@host:port/vhost, %2f for the vhost `/`)"),
            )
        })?;
        if uri.authority.host.is_empty() {
            return Err(ConfigError::new(variable, format!("{variable}: address {position} names no host")));
        }
        match &vhost {
            None => vhost = Some(uri.vhost.clone()),
            Some(first) if *first != uri.vhost => {
                return Err(ConfigError::new(
                    variable,
                    format!("{variable}: address {position} names another vhost than the first; every address must reach the same vhost"),
                ));
            }
            Some(_) => {}
        }
        // A cluster reached partly in the clear would send the password in the clear whenever a
        // connection fell to one of those addresses.
        match &scheme {
            None => scheme = Some(uri.scheme),
            Some(first) if *first != uri.scheme => {
                return Err(ConfigError::new(
                    variable,
                    format!("{variable}: address {position} is not amqp{s}:// like the first; every address must use the same scheme", s = if *first == AMQPScheme::AMQPS { "s" } else { "" }),
                ));
            }
            Some(_) => {}
        }
        addresses.push(SecretString::from(piece));
    }
    if addresses.is_empty() {
        return Err(ConfigError::new(variable, format!("{variable} is empty")));
    }
    Ok(addresses)
}

/// Whether an `@` comes after the authority of `url` (`scheme://authority/…`): the sign of a
/// character that ends the authority, written as is in the credentials before it. Also when the
/// authority holds an `@` of its own, since a password may hold both (`p@ss/w0rd`). An `@` of
/// the vhost's or a query's is written `%40`.
fn credentials_unescaped(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[authority_end..].contains('@')
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
pub enum Pem {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file named by `variable` and checks it holds what it should, failing with one
/// line that names the variable (never the key's content).
pub fn read_pem(variable: &'static str, path: &Path, holds: Pem) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::new(variable, format!("{variable}: cannot read {}: {}", super::secret::shown(path), e.kind()))
    })?;
    let usable = match holds {
        Pem::Certificates => {
            let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            certificates.is_ok_and(|c| !c.is_empty())
        }
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
    };
    if !usable {
        let what = match holds {
            Pem::Certificates => "no certificate in PEM",
            Pem::PrivateKey => "no private key in PEM (PKCS#8, PKCS#1 or SEC1)",
        };
        return Err(ConfigError::new(variable, format!("{variable}: {} holds {what}", path.display())));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<String>, String> {
        parse_addresses("AMQP_URL", &SecretString::from(text))
            .map(|a| a.iter().map(|s| s.expose_secret().to_owned()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn several_full_urls_separated_by_commas_are_several_addresses() {
        let urls = parse("amqp://u:p@a:5672/%2f, amqp://u:p@b:5673/%2f,").unwrap();
        assert_eq!(urls, ["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5673/%2f"]);
        assert_eq!(parse("amqps://u:p@a/v").unwrap().len(), 1);
    }

    #[test]
    fn one_url_with_several_hosts_is_refused_without_showing_the_password() {
        let error = parse("amqp://u:hunter2@a:5672,b:5672/%2f").unwrap_err();
        assert!(error.contains("AMQP_URL") && error.contains("not a full URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_cluster_reached_partly_in_the_clear_is_refused() {
        for text in ["amqps://u:hunter2@a/v,amqp://u:hunter2@b/v", "amqp://u:hunter2@a/v,amqps://u:hunter2@b/v"] {
            let error = parse(text).unwrap_err();
            assert!(error.contains("address 2") && error.contains("same scheme"), "{text}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        assert_eq!(parse("amqps://u:p@a/v,amqps://u:p@b/v").unwrap().len(), 2);
    }

    #[test]
    fn a_password_with_a_character_that_ends_the_host_unescaped_is_refused_without_showing_it() {
        // Each parses (the part before the `/`, `?` or `#` reads as host and port) and would name
        // `relay:4711` as the host in every connection error.
        for text in ["amqp://relay:4711/hunter2@broker:5672/%2f", "amqp://relay:4711?hunter2@broker/v"] {
            let error = parse(text).unwrap_err();
            assert!(error.contains("address 1") && error.contains("%2F"), "{text}: {error}");
            assert!(!error.contains("4711") && !error.contains("hunter2"), "{text}: {error}");
        }
        // A password holding an `@` too reads with a piece of it as the host (`ss` here).
        let error = parse("amqp://relay:p@ss/hunter2@broker:5672/%2f").unwrap_err();
        assert!(error.contains("%2F") && !error.contains("hunter2") && !error.contains("ss/"), "{error}");
        assert_eq!(parse("amqp://relay:4711%2Fhunter2@broker:5672/%2f").unwrap().len(), 1);
        assert_eq!(parse("amqp://relay:p@broker:5672/team%40prod").unwrap().len(), 1);
    }

    #[test]
    fn malformed_addresses_are_refused_naming_the_variable_never_the_password() {
        for text in
            ["http://u:hunter2@a", "amqp://u:hunter2@a:99999/%2f", "amqp://u:hunter2@a/v,amqp://u:hunter2@b/w", " , "]
        {
            let error = parse_addresses("AMQP_URL_FILE", &SecretString::from(text)).unwrap_err().to_string();
            assert!(error.contains("AMQP_URL_FILE"), "{text}: {error}");
            assert!(!error.contains("hunter2"), "{text}: {error}");
        }
    }
}
