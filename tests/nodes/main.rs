//! Tests against private RabbitMQ nodes the test starts itself: a TLS-only node, and a 3-node
//! cluster for failover drills. A test binary of its own, so its nodes' boot time and memory do
//! not slow the main suite.

mod drills;
mod node;
mod tls;

// The harness (crates/testkit), shared with tests/api; the drills and the TLS test name its
// parts as `crate::helpers`, `crate::process`, …
use polyai_relay_testkit::{broker, certs, fake_polyai, helpers, process, proxy};
