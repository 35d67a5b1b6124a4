//! The integration suite: one binary, real RabbitMQ, a fake PolyAI on port 0, the real relay
//! (in process through `spawn_app`, or as the built binary through `process`).

// The harness (crates/testkit), shared with tests/alarm and tests/nodes; each test names its
// parts as `crate::helpers`, `crate::backend`, …
use polyai_relay_testkit::{backend, broker, certs, fake_polyai, helpers, poll, process, proxy, tls_front};

mod addresses;
mod api_outage_runs;
mod audio;
mod audio_pace;
mod backfill;
mod broker_limit;
mod broker_tls;
mod commands;
mod config;
mod confirm_order;
mod crash;
mod dead;
mod demo;
mod deploy;
mod deploy_projects;
mod edge;
mod edge_process;
mod edge_worker;
mod fake_otlp;
mod healthcheck;
mod key_probe;
mod log_levels;
mod log_replay;
mod mock_api;
mod outage;
mod outage_logs;
mod outcome;
mod pipeline;
mod poison;
mod polyai_mock;
mod projects_backfill;
mod projects_commands;
mod projects_config;
mod projects_receiver;
mod projects_reconcile;
mod receiver;
mod receiver_amqp;
mod reconcile;
mod redirects;
mod returns;
mod secrets;
mod send;
mod shutdown;
mod spool;
mod spool_restart;
mod topology;
mod traces;
mod two_projects;
mod webhook_log;
mod worker;
mod worker_projects;
mod worker_step;
