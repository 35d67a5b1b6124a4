//! The harness of the integration tests (tests/api, tests/alarm, tests/nodes): the real relay in
//! process ([`helpers::spawn_app_with`]) or as the built binary ([`process`]), against a real
//! RabbitMQ per test ([`broker`]) or the embedded queue ([`backend`]), a fake PolyAI on port 0
//! ([`fake_polyai`]), a TCP proxy that cuts the broker off ([`proxy`]), certificates made for a
//! test ([`certs`]) and a TLS front for a plain listener ([`tls_front`]), and the one way to look
//! again and again at what cannot be awaited ([`poll`]).
//!
//! Each test binary uses some of it; the rest is there for the others.

pub mod backend;
pub mod broker;
pub mod certs;
pub mod fake_polyai;
pub mod helpers;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod tls_front;
