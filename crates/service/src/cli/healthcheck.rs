//! `healthcheck`: one GET of `/readyz`, for container health checks in an image without curl.

use std::time::Duration;

use super::stdout;
use clap::Args;

/// Short enough for Docker's default 30 s check timeout and a kubelet's exec probe; a relay
/// that cannot answer `/readyz` in 2 s is not healthy anyway.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to GET; any 2xx answer is healthy. Set it when RELAY_ADMIN_LISTEN uses another port.
    #[arg(long, env = "RELAY_HEALTHCHECK_URL", default_value = "http://127.0.0.1:9090/readyz")]
    url: String,
}

impl HealthcheckArgs {
    /// Prints one line and exits 0 on a 2xx answer, 1 otherwise. The failure path exits here
    /// rather than returning an error: a health check's output (what `docker inspect` shows)
    /// should be that one line, not the log line and report `main` adds to errors.
    pub async fn execute(self) -> anyhow::Result<()> {
        match probe(&self.url).await {
            Ok(line) => {
                stdout::line(format_args!("{line}"));
                Ok(())
            }
            Err(line) => {
                eprintln!("{line}");
                std::process::exit(1)
            }
        }
    }
}

async fn probe(url: &str) -> Result<String, String> {
    // No proxy: HTTP(S)_PROXY set for the relay's egress must not carry a loopback probe away.
    let client = crate::http_client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| format!("unhealthy: cannot build an HTTP client: {e}"))?;
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => Ok(format!("healthy: {url} answered {}", response.status())),
        Ok(response) => Err(format!("unhealthy: {url} answered {}", response.status())),
        Err(error) if error.is_timeout() => Err(format!("unhealthy: {url} did not answer within {TIMEOUT:?}")),
        Err(error) if error.is_builder() => {
            Err(format!("unhealthy: `{url}` is not a usable URL (RELAY_HEALTHCHECK_URL)"))
        }
        Err(_) => Err(format!("unhealthy: {url} could not be reached")),
    }
}
