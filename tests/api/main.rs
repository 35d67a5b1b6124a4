//! The integration suite: one binary, real RabbitMQ, a fake PolyAI on port 0, the real relay
//! (in process through `spawn_app`, or as the built binary through `process`).

mod addresses;
mod audio;
mod backend;
mod backfill;
mod broker;
mod commands;
mod config;
mod crash;
mod dead;
mod demo;
mod deploy;
mod edge;
mod edge_process;
mod edge_worker;
mod fake_otlp;
mod fake_polyai;
mod healthcheck;
mod helpers;
mod mock_api;
mod outage;
mod outage_logs;
mod pipeline;
mod poison;
mod process;
mod proxy;
mod receiver;
mod receiver_amqp;
mod secrets;
mod send;
mod shutdown;
mod spool;
mod spool_restart;
mod topology;
mod traces;
mod worker;
