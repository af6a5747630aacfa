//! What a run measures: every request's route, latency, size and outcome, per route and
//! per second of the run, in HDR histograms (microseconds, three significant digits).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The longest latency a histogram records exactly; longer ones are clamped to it.
const MAX_MICROS: u64 = 10 * 60 * 1_000_000;
/// How many distinct failure messages a route keeps (with their counts).
const MAX_DISTINCT_ERRORS: usize = 20;

/// A route as the report names it: Locust's "Type" and "Name" columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub method: &'static str,
    pub name: &'static str,
    /// Part of signing in or out (register, login, token, logout): password work
    /// that is refused first under overload, and left out of goodput.
    pub sign_in: bool,
}

impl Route {
    pub const fn new(method: &'static str, name: &'static str) -> Self {
        Self {
            method,
            name,
            sign_in: false,
        }
    }

    /// A route of signing in or out.
    pub const fn sign_in(method: &'static str, name: &'static str) -> Self {
        Self {
            method,
            name,
            sign_in: true,
        }
    }
}

/// Whether a failure is the service's fault: a 5xx that was not a refusal, a GraphQL
/// `INTERNAL`, a timeout, or a connection that failed or was cut. Refusals, and a
/// client's own mistakes (4xx), are not.
pub fn is_fault(error: &str) -> bool {
    error.starts_with('5')
        || error == "GraphQL INTERNAL"
        || matches!(
            error,
            "timeout" | "connection failed" | "connection error" | "answer cut short"
        )
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    pub route: Route,
    pub latency: Duration,
    /// Bytes of the response body.
    pub size: u64,
    /// Why it failed, or `None` when it succeeded.
    pub error: Option<String>,
    /// It failed as a refusal: a 429 or 503 that said when to come back (`Retry-After`).
    pub refused: bool,
}

/// The numbers kept for one route (or for all routes together).
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub failures: u64,
    /// Failures that were refusals (429 or 503 with `Retry-After`): the overload
    /// answers a polite client waits out.
    pub refusals: u64,
    /// Failures that were the service's fault ([`is_fault`]).
    pub faults: u64,
    pub bytes: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            requests: 0,
            failures: 0,
            refusals: 0,
            faults: 0,
            bytes: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    fn add(&mut self, sample: &Sample) {
        let micros = u64::try_from(sample.latency.as_micros()).unwrap_or(MAX_MICROS);
        self.latency.saturating_record(micros.clamp(1, MAX_MICROS));
        self.requests += 1;
        self.bytes += sample.size;
        if let Some(error) = &sample.error {
            self.failures += 1;
            self.refusals += u64::from(sample.refused);
            self.faults += u64::from(!sample.refused && is_fault(error));
            if let Some(count) = self.errors.get_mut(error) {
                *count += 1;
            } else if self.errors.len() < MAX_DISTINCT_ERRORS {
                self.errors.insert(error.clone(), 1);
            }
        }
    }

    /// The latency at `quantile` (0.0–1.0), in milliseconds.
    pub fn percentile_ms(&self, quantile: f64) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.latency.mean() / 1000.0
    }

    pub fn min_ms(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.latency.min() as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    pub fn failure_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (1 ≤ low, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!())
}

/// One second of the run, for the charts.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub stats: Stats,
    /// The most users active at any request of this second.
    pub users: usize,
}

#[derive(Debug, Default)]
struct Inner {
    routes: BTreeMap<Route, Stats>,
    timeline: Vec<Second>,
    /// Requests off the sign-in routes that were not refused.
    admitted_work: Stats,
}

/// Collects samples from every simulated user. Cheap to share (`Arc`); one short lock
/// per request.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    active_users: AtomicUsize,
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            active_users: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn user_started(&self) {
        self.active_users.fetch_add(1, Ordering::Relaxed);
        self.touch_timeline();
    }

    pub fn user_stopped(&self) {
        self.active_users.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn active_users(&self) -> usize {
        self.active_users.load(Ordering::Relaxed)
    }

    /// Records a sample, in the second the request ended.
    pub fn record(&self, sample: Sample) {
        let second = self.started.elapsed().as_secs() as usize;
        let users = self.active_users();
        let mut inner = self.lock();
        inner.routes.entry(sample.route).or_default().add(&sample);
        if !sample.route.sign_in && !sample.refused {
            inner.admitted_work.add(&sample);
        }
        let slot = second_slot(&mut inner.timeline, second);
        slot.stats.add(&sample);
        slot.users = slot.users.max(users);
    }

    fn touch_timeline(&self) {
        let second = self.started.elapsed().as_secs() as usize;
        let users = self.active_users();
        let mut inner = self.lock();
        let slot = second_slot(&mut inner.timeline, second);
        slot.users = slot.users.max(users);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters half-updated in a
        // way that matters to a report, so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last `window` whole seconds: active users now, requests and failures per
    /// second, refusals, and the 95th percentile, for a progress line.
    pub fn progress(&self, window: usize) -> Progress {
        let now = self.started.elapsed().as_secs() as usize;
        let inner = self.lock();
        let mut stats = Stats::default();
        let from = now.saturating_sub(window);
        for second in inner.timeline.iter().skip(from).take(now - from) {
            merge(&mut stats, &second.stats);
        }
        let seconds = (now - from).max(1) as f64;
        Progress {
            elapsed_s: now,
            users: self.active_users(),
            requests_per_s: stats.requests as f64 / seconds,
            failures_per_s: (stats.failures - stats.refusals) as f64 / seconds,
            refusals_per_s: stats.refusals as f64 / seconds,
            p95_ms: stats.percentile_ms(0.95),
        }
    }

    /// What was recorded so far: per route, all routes together, and per second.
    pub fn snapshot(&self) -> Snapshot {
        let elapsed = self.started.elapsed();
        let inner = self.lock();
        let mut total = Stats::default();
        for stats in inner.routes.values() {
            merge(&mut total, stats);
        }
        Snapshot {
            elapsed,
            routes: inner.routes.clone(),
            total,
            timeline: inner.timeline.clone(),
            admitted_work: inner.admitted_work.clone(),
        }
    }
}

fn second_slot(timeline: &mut Vec<Second>, second: usize) -> &mut Second {
    if timeline.len() <= second {
        timeline.resize_with(second + 1, Second::default);
    }
    &mut timeline[second]
}

fn merge(into: &mut Stats, from: &Stats) {
    // Both histograms share the same bounds, so adding cannot fail.
    let _ = into.latency.add(&from.latency);
    into.requests += from.requests;
    into.failures += from.failures;
    into.refusals += from.refusals;
    into.faults += from.faults;
    into.bytes += from.bytes;
    for (error, count) in &from.errors {
        *into.errors.entry(error.clone()).or_default() += count;
    }
}

/// The recent rates, as the progress line shows them.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed_s: usize,
    pub users: usize,
    pub requests_per_s: f64,
    /// Failures other than refusals.
    pub failures_per_s: f64,
    pub refusals_per_s: f64,
    pub p95_ms: f64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:>4} s] users {:>5}  req/s {:>7.1}  failures/s {:>6.1}  refused/s {:>6.1}  p95 {:>7.1} ms",
            self.elapsed_s,
            self.users,
            self.requests_per_s,
            self.failures_per_s,
            self.refusals_per_s,
            self.p95_ms
        )
    }
}

/// A copy of the numbers at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub routes: BTreeMap<Route, Stats>,
    pub total: Stats,
    pub timeline: Vec<Second>,
    /// Requests off the sign-in routes that were not refused: what goodput and the
    /// overload p99 are measured on.
    pub admitted_work: Stats,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Route = Route::new("GET", "/a");
    const POST: Route = Route::new("POST", "/b");

    fn sample(route: Route, ms: u64, error: Option<&str>) -> Sample {
        Sample {
            refused: false,
            route,
            latency: Duration::from_millis(ms),
            size: 100,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn totals_and_percentiles_add_up_across_routes() {
        let recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.record(sample(GET, ms, None));
        }
        recorder.record(sample(POST, 500, Some("status 500")));
        recorder.record(sample(POST, 700, Some("status 500")));
        let snap = recorder.snapshot();

        let get = &snap.routes[&GET];
        assert_eq!(get.requests, 100);
        assert_eq!(get.failures, 0);
        assert!(
            (get.percentile_ms(0.5) - 50.0).abs() < 0.1,
            "{}",
            get.percentile_ms(0.5)
        );
        assert!((get.percentile_ms(0.99) - 99.0).abs() < 0.1);
        assert!((get.max_ms() - 100.0).abs() < 0.1);
        assert!((get.min_ms() - 1.0).abs() < 0.01);

        let post = &snap.routes[&POST];
        assert_eq!(post.failures, 2);
        assert_eq!(post.errors["status 500"], 2);

        assert_eq!(snap.total.requests, 102);
        assert_eq!(snap.total.failures, 2);
        assert_eq!(snap.total.bytes, 10_200);
        assert!((snap.total.max_ms() - 700.0).abs() < 1.0);
        assert!((snap.total.failure_rate() - 2.0 / 102.0).abs() < 1e-9);
    }

    #[test]
    fn progress_counts_refusals_apart_from_failures() {
        let recorder = Recorder::new();
        recorder.user_started();
        recorder.record(sample(GET, 5, None));
        recorder.record(sample(GET, 5, Some("500 INTERNAL")));
        recorder.record(Sample {
            refused: true,
            ..sample(GET, 5, Some("503 BUSY"))
        });
        let total = recorder.snapshot().total;
        assert_eq!((total.requests, total.failures, total.refusals), (3, 2, 1));
        // The current second is not over: a progress line covers whole seconds only.
        assert_eq!(recorder.progress(5).requests_per_s, 0.0);
        let line = recorder.progress(5).to_string();
        assert!(
            line.contains("users     1") && line.contains("refused/s"),
            "{line}"
        );
    }

    #[test]
    fn admitted_work_leaves_out_sign_in_and_refusals_and_faults_are_counted() {
        const LOGIN: Route = Route::sign_in("POST", "/login");
        let recorder = Recorder::new();
        recorder.record(sample(LOGIN, 900, None));
        recorder.record(sample(GET, 5, None));
        recorder.record(sample(GET, 7, Some("409 CONFLICT")));
        recorder.record(sample(GET, 30_000, Some("timeout")));
        recorder.record(sample(POST, 9, Some("502")));
        recorder.record(sample(POST, 9, Some("GraphQL INTERNAL")));
        recorder.record(Sample {
            refused: true,
            ..sample(GET, 1, Some("503 INTERNAL"))
        });
        let snap = recorder.snapshot();
        let admitted = &snap.admitted_work;
        assert_eq!((admitted.requests, admitted.failures), (5, 4));
        assert!(
            admitted.min_ms() >= 5.0,
            "neither the login nor the refusal"
        );
        // A refusal and a client's conflict are no fault; the rest are.
        assert_eq!((snap.total.faults, snap.total.refusals), (3, 1));
    }

    #[test]
    fn the_timeline_counts_users_and_requests_per_second() {
        let recorder = Recorder::new();
        recorder.user_started();
        recorder.user_started();
        recorder.record(sample(GET, 5, None));
        recorder.user_stopped();
        let snap = recorder.snapshot();
        assert_eq!(snap.timeline.len(), 1);
        assert_eq!(snap.timeline[0].users, 2);
        assert_eq!(snap.timeline[0].stats.requests, 1);
        assert_eq!(recorder.active_users(), 1);
    }

    #[test]
    fn distinct_errors_are_capped_but_all_failures_counted() {
        let recorder = Recorder::new();
        for i in 0..(MAX_DISTINCT_ERRORS + 5) {
            recorder.record(sample(GET, 1, Some(&format!("error {i}"))));
        }
        let snap = recorder.snapshot();
        assert_eq!(snap.routes[&GET].failures as usize, MAX_DISTINCT_ERRORS + 5);
        assert_eq!(snap.routes[&GET].errors.len(), MAX_DISTINCT_ERRORS);
    }
}
