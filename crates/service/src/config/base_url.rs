//! A validated base URL: http(s) with a host, so request URLs built on it always have a path.

use std::{fmt, str::FromStr};

use url::Url;

use super::ConfigError;

/// An http(s) URL with a host. Such a URL can always take path segments, which is what lets
/// [`BaseUrl::join`] build request URLs without a failure case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(Url);

impl BaseUrl {
    /// Parses an http(s) URL given for `variable`.
    pub fn parse(variable: &str, text: &str) -> Result<Self, ConfigError> {
        let url = Url::parse(text.trim())
            .map_err(|e| ConfigError::new(variable, format!("{variable} is not a URL ({e})")))?;
        // Printed whole by `check` and in errors: a password in it would be shown. PolyAI's APIs
        // take their key in a header of its own.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::new(
                variable,
                format!("{variable} must not hold a user name or password: the API key goes in its own setting"),
            ));
        }
        Self::try_from(url)
            .map_err(|_| ConfigError::new(variable, format!("{variable} must be an http(s) URL with a host")))
    }

    /// This URL with `segments` added to its path, each escaped (so an id cannot change the path).
    pub fn join(&self, segments: &[&str]) -> Url {
        let mut url = self.0.clone();
        url.path_segments_mut().expect("an http(s) URL with a host has a path").pop_if_empty().extend(segments);
        url
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }
}

impl TryFrom<Url> for BaseUrl {
    type Error = Url;

    fn try_from(url: Url) -> Result<Self, Url> {
        if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() && !url.cannot_be_a_base() {
            Ok(Self(url))
        } else {
            Err(url)
        }
    }
}

impl FromStr for BaseUrl {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse("URL", text)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_hosts_pass() {
        assert!(BaseUrl::parse("POLYAI_BASE_URL", "ftp://x").is_err());
        assert!(BaseUrl::parse("POLYAI_BASE_URL", "not a url").is_err());
        assert!(BaseUrl::parse("POLYAI_BASE_URL", "mailto:a@b").is_err());
        assert!(BaseUrl::parse("POLYAI_BASE_URL", "http://127.0.0.1:1").is_ok());
    }

    #[test]
    fn a_url_holding_credentials_is_refused_without_showing_them() {
        for text in ["https://user:hunter2@proxy.example/", "https://hunter2@proxy.example/"] {
            let error = BaseUrl::parse("POLYAI_BASE_URL", text).unwrap_err().to_string();
            assert!(error.contains("POLYAI_BASE_URL") && error.contains("user name or password"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn segments_join_the_path_escaped() {
        let base: BaseUrl = "http://h/prefix/".parse().unwrap();
        assert_eq!(base.join(&["v3", "a/b"]).as_str(), "http://h/prefix/v3/a%2Fb");
    }
}
