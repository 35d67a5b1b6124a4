//! polyai-relay: PolyAI's signed webhooks in, durable queue, enriched conversation records out.
//!
//! The service only: what runs in production. The mock API and the sender are development tools
//! of their own crate (crates/devtools); the binary at the workspace's root offers both.

pub mod app;
pub mod backfill;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod dead;
pub mod event;
pub mod http_client;
pub mod listener;
pub mod log_escape;
pub mod log_limit;
pub mod log_replay;
pub mod owner_only;
pub mod polyai;
pub mod queue;
pub mod receiver;
pub mod reconcile;
pub mod shutdown;
pub mod signature;
pub mod spool;
pub mod telemetry;
#[cfg(test)]
mod temp_dir;
pub mod wall_clock;
pub mod worker;
