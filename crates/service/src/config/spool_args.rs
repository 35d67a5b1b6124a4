//! `RELAY_SPOOL_DIR` and `RELAY_SPOOL_MAX`: the receiver's local spool (design §11).

use std::path::PathBuf;

use clap::Args;

use super::values;

#[derive(Debug, Clone, Args)]
pub struct SpoolArgs {
    /// Directory of the local spool that keeps webhooks answered 204 while RabbitMQ is away
    /// (created owner-only). Unset: no spool; webhooks get 503 during an outage.
    #[arg(long, env = "RELAY_SPOOL_DIR", value_parser = spool_dir)]
    pub spool_dir: Option<PathBuf>,
    /// Most the spool holds (bytes of events); when full, webhooks get 503 again.
    #[arg(long, env = "RELAY_SPOOL_MAX", default_value = "1GiB", value_parser = spool_max)]
    pub spool_max: u64,
}

/// Any path; an empty one (`RELAY_SPOOL_DIR=`) means off, as unset does.
fn spool_dir(text: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(text))
}

fn spool_max(text: &str) -> Result<u64, String> {
    values::parse_size(text).map(|n| n as u64).map_err(|e| format!("RELAY_SPOOL_MAX: {e}"))
}

/// Where the spool lives and how much it may hold.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl SpoolArgs {
    /// `None` when the spool is off (`RELAY_SPOOL_DIR` unset or empty).
    pub fn settings(&self) -> Option<SpoolSettings> {
        let dir = self.spool_dir.as_ref().filter(|dir| !dir.as_os_str().is_empty())?;
        Some(SpoolSettings { dir: dir.clone(), max_bytes: self.spool_max })
    }
}
