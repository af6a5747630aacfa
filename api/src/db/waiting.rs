//! A bounded count of those waiting, shared by the two bounded queues of a replica:
//! writes waiting for SQLite's writer ([`super::WriteGate`]) and password jobs waiting
//! for a worker (`service::admission`). It lives here, the lower of the two layers.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A bounded count of those waiting.
#[derive(Debug)]
pub struct WaitingRoom {
    waiting: AtomicUsize,
    limit: usize,
}

impl WaitingRoom {
    /// At most `limit` wait at once.
    pub fn new(limit: usize) -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            limit,
        }
    }

    /// A place, or `None` when all `limit` are taken. The place is given back when it is
    /// dropped, however the wait ends, a cancelled request's included.
    pub fn join(&self) -> Option<Place<'_>> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Place(&self.waiting))
    }

    /// How many wait now.
    pub fn count(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// One place in a [`WaitingRoom`], held while waiting.
#[derive(Debug)]
pub struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
