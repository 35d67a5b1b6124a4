//! The messages one consumer of the embedded queue has leased: given back when the consumer goes,
//! as a closed AMQP channel returns its unacked messages.

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard},
};

#[derive(Default)]
pub(super) struct Leases(Mutex<State>);

#[derive(Default)]
struct State {
    held: HashSet<i64>,
    /// The consumer has gone: a lease taken by a look still running then is not its to hold.
    closed: bool,
}

impl Leases {
    /// Notes the message `seq` as held by the consumer, where its lease is taken. False once the
    /// consumer has gone: the caller gives the message back itself.
    pub fn hold(&self, seq: i64) -> bool {
        let mut state = self.state();
        if !state.closed {
            state.held.insert(seq);
        }
        !state.closed
    }

    /// The message `seq` is acked, given back or dead-lettered.
    pub fn settled(&self, seq: i64) {
        self.state().held.remove(&seq);
    }

    /// The consumer goes: what it holds, to give back. It holds nothing from now on.
    pub fn close(&self) -> Vec<i64> {
        let mut state = self.state();
        state.closed = true;
        state.held.drain().collect()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_held_and_unsettled_is_given_back_once_and_nothing_is_held_after() {
        let leases = Leases::default();
        assert!(leases.hold(1) && leases.hold(2));
        leases.settled(1);
        assert_eq!(leases.close(), [2]);
        assert!(!leases.hold(3), "a lease taken after the consumer went is the taker's to give back");
        assert_eq!(leases.close(), Vec::<i64>::new());
    }
}
