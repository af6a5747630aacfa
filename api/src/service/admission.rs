//! Admission control for CPU-heavy work: a fixed number of workers, a short queue with
//! a deadline, and a fast refusal past them.
//!
//! Password hashing (argon2, about 25 ms of a core) and picture decoding (up to a few
//! hundred ms for a large photo) run on tokio's blocking pool, which grows to hundreds
//! of threads: unbounded, a storm of either takes the cores from every other request,
//! and everything queues behind it until it times out (issue 15). So each class of such
//! work gets `workers` places (one per core by default), at most `queue` callers wait
//! for one, each for at most `max_wait`, and the rest are refused at once with
//! [`ServiceError::Busy`], which clients retry after its `Retry-After`. A refusal costs
//! no work, so it is answered in microseconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ServiceError, ServiceResult};

/// How much of one class of work may run and wait at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Jobs running at once.
    pub workers: usize,
    /// Callers waiting for a worker; more are refused at once.
    pub queue: usize,
    /// How long one waits for a worker before it is refused.
    pub max_wait: Duration,
}

impl AdmissionPolicy {
    /// One worker per core and a queue of two per worker.
    pub fn per_core(max_wait: Duration) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            workers,
            queue: 2 * workers,
            max_wait,
        }
    }
}

impl Default for AdmissionPolicy {
    /// [`AdmissionPolicy::per_core`] with half a second's wait: with argon2 at about
    /// 25 ms a job, a full queue drains in about 50 ms.
    fn default() -> Self {
        Self::per_core(Duration::from_millis(500))
    }
}

/// What a refusal tells the client to wait.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The workers' permits and the count of those waiting for one.
#[derive(Debug)]
pub struct Admission {
    policy: AdmissionPolicy,
    workers: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Admission {
    pub fn new(policy: AdmissionPolicy) -> Self {
        Self {
            policy,
            workers: Arc::new(Semaphore::new(policy.workers.max(1))),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A worker's permit, or BUSY when the queue is full or the wait runs out. The
    /// permit should travel with the work (into `spawn_blocking`), so that a request
    /// dropped meanwhile frees no place before the work ends.
    pub async fn admit(&self) -> ServiceResult<OwnedSemaphorePermit> {
        let busy = ServiceError::Busy {
            retry_after: BUSY_RETRY_AFTER,
        };
        if let Ok(permit) = self.workers.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.policy.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy);
        }
        // Counted out however the wait ends, a drop included.
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.policy.max_wait, self.workers.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy),
        }
    }

    /// Callers waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
