//! PolyAI's two host families and the checks that catch the docs' "most common source of 404s":
//! a runtime URL on the build host family, or the other way round.

use super::{BaseUrl, ConfigError};

/// A PolyAI region, as `POLYAI_REGION` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Us,
    Uk,
    Euw,
}

impl Region {
    /// `label` names where the text came from in the error (`POLYAI_REGION`, a projects file's field).
    pub fn parse(label: &str, text: &str) -> Result<Self, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "us" => Ok(Self::Us),
            "uk" => Ok(Self::Uk),
            "euw" | "eu" => Ok(Self::Euw),
            other => Err(ConfigError::new(
                "POLYAI_REGION",
                format!("{label} `{other}` is not a PolyAI region; use `us`, `uk` or `euw`"),
            )),
        }
    }

    /// The runtime/data host family (`api.{us-1,uk-1,euw-1}.platform.polyai.app`): Conversations v3.
    pub fn runtime_url(self) -> BaseUrl {
        let host = match self {
            Self::Us => "us-1",
            Self::Uk => "uk-1",
            Self::Euw => "euw-1",
        };
        BaseUrl::parse("POLYAI_REGION", &format!("https://api.{host}.platform.polyai.app"))
            .expect("static URL is valid")
    }

    /// The build/monitor host family (`api.{us,uk,eu}.poly.ai`): Webhooks, Agents, audio.
    pub fn platform_url(self) -> BaseUrl {
        let host = match self {
            Self::Us => "us",
            Self::Uk => "uk",
            Self::Euw => "eu",
        };
        BaseUrl::parse("POLYAI_REGION", &format!("https://api.{host}.poly.ai")).expect("static URL is valid")
    }
}

fn is_build_family(host: &str) -> bool {
    host.ends_with(".poly.ai")
}

fn is_runtime_family(host: &str) -> bool {
    host.ends_with(".platform.polyai.app")
}

/// Refuses a runtime URL (`POLYAI_BASE_URL`, named by `label`) on the build host family: the v3
/// API is not served there.
pub fn check_runtime_url(label: &str, url: &BaseUrl) -> Result<(), ConfigError> {
    let host = url.host();
    if is_build_family(host) {
        let region = host.trim_start_matches("api.").trim_end_matches(".poly.ai");
        let hint = match region {
            "us" => "api.us-1.platform.polyai.app",
            "uk" => "api.uk-1.platform.polyai.app",
            "eu" => "api.euw-1.platform.polyai.app",
            _ => "api.{us-1,uk-1,euw-1}.platform.polyai.app",
        };
        return Err(ConfigError::new(
            "POLYAI_BASE_URL",
            format!("{label} points at {host}, the Agents/Webhooks host; the Conversations v3 API is on {hint}"),
        ));
    }
    Ok(())
}

/// Refuses a platform URL (`POLYAI_PLATFORM_URL`, named by `label`) on the runtime host family:
/// the Webhooks API is not served there.
pub fn check_platform_url(label: &str, url: &BaseUrl) -> Result<(), ConfigError> {
    let host = url.host();
    if is_runtime_family(host) {
        return Err(ConfigError::new(
            "POLYAI_PLATFORM_URL",
            format!("{label} points at {host}, the runtime host; the Webhooks and Agents APIs are on api.{{us,uk,eu}}.poly.ai"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_pick_both_host_families() {
        assert_eq!(
            Region::parse("POLYAI_REGION", "us").unwrap().runtime_url().as_str(),
            "https://api.us-1.platform.polyai.app/"
        );
        assert_eq!(Region::parse("POLYAI_REGION", "EUW").unwrap().platform_url().as_str(), "https://api.eu.poly.ai/");
        let err = Region::parse("POLYAI_REGION", "mars").unwrap_err().to_string();
        assert!(err.contains("POLYAI_REGION") && err.contains("mars"));
    }

    #[test]
    fn a_runtime_url_on_the_build_host_family_is_refused_with_the_right_host() {
        let url = |text: &str| text.parse::<BaseUrl>().unwrap();
        let err = check_runtime_url("POLYAI_BASE_URL", &url("https://api.us.poly.ai")).unwrap_err().to_string();
        assert!(err.contains("POLYAI_BASE_URL") && err.contains("api.us-1.platform.polyai.app"), "{err}");
        assert!(check_runtime_url("POLYAI_BASE_URL", &url("https://api.uk-1.platform.polyai.app")).is_ok());
        assert!(check_runtime_url("POLYAI_BASE_URL", &url("http://127.0.0.1:9999")).is_ok());
    }

    #[test]
    fn a_platform_url_on_the_runtime_family_is_refused() {
        let url: BaseUrl = "https://api.us-1.platform.polyai.app".parse().unwrap();
        assert!(check_platform_url("POLYAI_PLATFORM_URL", &url)
            .unwrap_err()
            .to_string()
            .contains("POLYAI_PLATFORM_URL"));
    }
}
