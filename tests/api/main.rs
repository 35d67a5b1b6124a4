//! The integration suite: one binary, real RabbitMQ, a fake PolyAI on port 0, the real relay
//! (in process through `spawn_app`, or as the built binary through `process`).

mod broker;
mod config;
mod fake_polyai;
mod helpers;
mod mock_api;
mod pipeline;
mod process;
mod receiver;
mod secrets;
mod shutdown;
mod worker;
