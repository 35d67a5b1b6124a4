//! A metric's handle kept where it is recorded on every webhook.
//!
//! `metrics::counter!(name, labels…)` builds a key and looks it up in the recorder's registry
//! (hashing the name and every label) each time it runs: about 4,000 instructions per accepted
//! webhook over its five series (BENCHMARKS.md). A handle kept after its first lookup adds to the
//! same series, for the price of an atomic.

use std::sync::OnceLock;

use super::Metrics;

/// A handle (`Counter`, `Gauge`, `Histogram`) taken from a relay's recorder on first use and kept.
///
/// It belongs beside the [`Metrics`] it is taken from, in the same struct: a handle is bound to
/// the recorder that gave it, and every later use goes to that recorder whatever is passed.
/// Nothing is registered before its first use, so `/metrics` shows a series only once it was
/// recorded, as with the macros.
#[derive(Debug)]
pub struct Kept<T>(OnceLock<T>);

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Kept<T> {
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The handle, registered with `register` (a `metrics::counter!(…)` and the like) in
    /// `meter`'s recorder the first time.
    pub fn get(&self, meter: &Metrics, register: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(|| meter.record(register))
    }
}
