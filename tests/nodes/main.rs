//! Tests against private RabbitMQ nodes the test starts itself: a TLS-only node, and a 3-node
//! cluster for failover drills. A test binary of its own, so its nodes' boot time and memory do
//! not slow the main suite.

// This binary borrows the api suite's helpers and uses only some of them.
#![allow(dead_code, unused_imports, unused_macros)]

#[path = "../api/backend.rs"]
mod backend;
#[path = "../api/broker.rs"]
mod broker;
mod certs;
mod drills;
#[path = "../api/fake_polyai.rs"]
mod fake_polyai;
#[path = "../api/helpers.rs"]
mod helpers;
mod node;
#[path = "../api/poll.rs"]
mod poll;
#[path = "../api/process.rs"]
mod process;
#[path = "../api/proxy.rs"]
mod proxy;
mod tls;
