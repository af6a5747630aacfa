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
//!
//! # Priority
//!
//! Admitted work runs on threads of the class's own, at the lowest scheduling priority
//! (nice 19 on Linux), not on tokio's blocking pool. Bounding the jobs alone still let
//! a login storm take every core from the requests of partners already logged in:
//! with one hash per core, the runtime's threads and SQLite's connection threads
//! waited for a time slice behind argon2, and stock changes took a second (see
//! "Overload" in docs/BENCHMARKS.md). At nice 19 a thread weighs about 1/70 of a normal
//! one, so password work uses the cores that nothing else wants, and yields them as
//! soon as a request needs one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::db::WaitingRoom;
use crate::error::{ServiceError, ServiceResult};

/// The nice value of the admitted work's threads: the lowest priority there is.
pub const WORKER_NICE: i32 = 19;

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

/// The workers' permits, the count of those waiting for one, and the threads the
/// admitted work runs on.
#[derive(Debug)]
pub struct Admission {
    /// Names the threads: `ecanteen-{class}-{n}`.
    class: &'static str,
    policy: AdmissionPolicy,
    workers: Arc<Semaphore>,
    waiting: WaitingRoom,
    /// Started at the first job; the error, if they could not be, is kept.
    threads: OnceLock<Result<rayon::ThreadPool, String>>,
}

/// A place among the workers, taken by [`Admission::admit`]. It travels with the work
/// into [`Admission::run`], so a request dropped meanwhile frees no place before the
/// work ends.
#[derive(Debug)]
pub struct Admitted {
    /// Given back when the work ends.
    _place: OwnedSemaphorePermit,
}

impl Admission {
    /// An admission for one class of work (`class` names its threads).
    pub fn new(class: &'static str, policy: AdmissionPolicy) -> Self {
        Self {
            class,
            policy,
            workers: Arc::new(Semaphore::new(policy.workers.max(1))),
            waiting: WaitingRoom::new(policy.queue),
            threads: OnceLock::new(),
        }
    }

    /// Admits `job`, runs it on a low-priority worker thread and waits for its result.
    pub async fn run<T, F>(&self, job: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let admitted = self.admit().await?;
        self.run_admitted(admitted, job).await
    }

    /// Runs `job` on a place already admitted. Dropping the returned future leaves the
    /// job running to its end (it holds the place until then); only its result is lost.
    pub async fn run_admitted<T, F>(&self, admitted: Admitted, job: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let threads = self
            .threads()
            .map_err(|e| ServiceError::Internal(anyhow!("{e}")))?;
        let (done, result) = tokio::sync::oneshot::channel();
        threads.spawn(move || {
            let _place = admitted;
            // The waiter may be gone; the job has still run to its end.
            let _ = done.send(job());
        });
        // A job that panicked drops `done` unsent; rayon's panic handler logs it.
        result
            .await
            .map_err(|_| ServiceError::Internal(anyhow!("a {} job panicked", self.class)))
    }

    fn threads(&self) -> Result<&rayon::ThreadPool, &String> {
        self.threads
            .get_or_init(|| {
                let class = self.class;
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.policy.workers.max(1))
                    .thread_name(move |n| format!("ecanteen-{class}-{n}"))
                    .start_handler(move |_| lower_this_threads_priority(class))
                    .panic_handler(move |_| tracing::error!(class, "an admitted job panicked"))
                    .build()
                    .map_err(|e| format!("cannot start the {class} threads: {e}"))
            })
            .as_ref()
    }

    /// A worker's place, or BUSY when the queue is full or the wait runs out.
    pub async fn admit(&self) -> ServiceResult<Admitted> {
        let busy = ServiceError::Busy {
            retry_after: BUSY_RETRY_AFTER,
        };
        if let Ok(permit) = self.workers.clone().try_acquire_owned() {
            return Ok(Admitted { _place: permit });
        }
        let Some(_place) = self.waiting.join() else {
            return Err(busy);
        };
        match tokio::time::timeout(self.policy.max_wait, self.workers.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(Admitted { _place: permit }),
            _ => Err(busy),
        }
    }

    /// Callers waiting for a worker now.
    pub fn waiting(&self) -> usize {
        self.waiting.count()
    }
}

/// Sets the calling thread's nice value to [`WORKER_NICE`]. On Linux the nice value
/// belongs to the thread, not the process. Raising it needs no privilege; where it
/// fails anyway the work still runs, at normal priority, and the failure is logged.
fn lower_this_threads_priority(class: &'static str) {
    let this_thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(this_thread), WORKER_NICE) {
        tracing::warn!(class, error = %e, "cannot lower a worker thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_worker() -> Admission {
        Admission::new(
            "test",
            AdmissionPolicy {
                workers: 1,
                queue: 1,
                max_wait: Duration::from_millis(100),
            },
        )
    }

    /// Admitted work runs at the lowest priority, on the class's own named threads,
    /// while the caller's thread keeps its own.
    #[tokio::test]
    async fn admitted_work_runs_on_its_own_threads_at_the_lowest_priority() -> anyhow::Result<()> {
        let admission = one_worker();
        let (name, nice) = admission
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, rustix::process::getpriority_process(None))
            })
            .await?;
        assert_eq!(name.as_deref(), Some("ecanteen-test-0"));
        assert_eq!(nice?, WORKER_NICE);
        assert_ne!(rustix::process::getpriority_process(None)?, WORKER_NICE);
        Ok(())
    }

    /// A job that panics is an internal error for its caller, frees its place, and
    /// leaves the threads serving the next job.
    #[tokio::test]
    async fn a_job_that_panics_frees_its_place_and_the_next_job_runs() -> anyhow::Result<()> {
        let admission = one_worker();
        let failed = admission
            .run(|| -> u8 { panic!("a malformed input") })
            .await;
        assert!(
            matches!(failed, Err(ServiceError::Internal(_))),
            "{failed:?}"
        );
        assert_eq!(admission.run(|| 7).await?, 7);
        Ok(())
    }

    /// The caller that stops waiting does not stop the job: its place stays taken until
    /// the job ends, so work dropped by its clients still counts against the bound.
    #[tokio::test]
    async fn a_dropped_wait_keeps_the_place_until_the_job_ends() -> anyhow::Result<()> {
        let admission = Arc::new(one_worker());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.run(move || released.recv().is_ok()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        let _ = waiting.await;
        // The job still holds the only place: a new one waits out its deadline.
        let refused = admission.run(|| ()).await;
        assert!(
            matches!(refused, Err(ServiceError::Busy { .. })),
            "{refused:?}"
        );
        release.send(())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        admission.run(|| ()).await?;
        Ok(())
    }
}
