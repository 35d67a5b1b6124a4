//! polyai-relay: PolyAI's signed webhooks in, durable queue, enriched conversation records out.

pub mod app;
pub mod backfill;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod dead;
pub mod event;
pub mod listener;
pub mod log_escape;
pub mod log_limit;
pub mod mock_api;
pub mod owner_only;
pub mod polyai;
pub mod queue;
pub mod receiver;
pub mod reconcile;
pub mod sender;
pub mod shutdown;
pub mod signature;
pub mod spool;
pub mod telemetry;
pub mod worker;
