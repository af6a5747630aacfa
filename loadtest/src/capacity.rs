//! Capacity mode: closed-loop users with no think time, stepped up (1, 2, 4, … by
//! default) until a step's p99 exceeds the bound or a request fails; the answer is the
//! highest step that held. Two workloads:
//!
//! - `reads`: the catalogue's first 20 products (anonymous), from 50 seeded products;
//! - `stock`: each user sells and restocks its own product (+1, −1, …) with an API token
//!   and an idempotency key per change, and the invariant check runs at the end.
//!
//! With `--login-storm N`, N more users log in over and over, with no think time, for
//! the whole run: password work is saturated, and the steps show what that does to
//! everyone else (issue 15's isolation). The storm's own numbers are reported apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::api::{ApiKind, NewProduct, Partner};
use crate::invariant::{self, Expectation, InvariantReport};
use crate::metrics::Recorder;
use crate::report::{csv_field, RouteRow};

/// Stock each product starts with; the users alternate +1 and −1, so it never runs out.
const START_STOCK: i64 = 1_000;
const SEEDED_PRODUCTS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Product reads: `products(first: 20)` or `GET /ecanteen/product?limit=20`.
    Reads,
    /// Stock changes: `adjustStock` or `POST /ecanteen/product/{id}/stock`.
    Stock,
}

#[derive(Clone, Debug)]
pub struct CapacityOptions {
    pub base: String,
    pub api: ApiKind,
    pub workload: Workload,
    pub start_users: usize,
    pub max_users: usize,
    /// Each step has this many times the users of the one before.
    pub factor: usize,
    pub step_duration: Duration,
    /// A step holds while its p99 stays at or under this.
    pub p99_bound: Duration,
    pub password: String,
    pub request_timeout: Duration,
    pub run_id: String,
    /// Users logging in over and over beside the steps (0: none).
    pub login_storm: usize,
}

/// One step's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub users: usize,
    pub held: bool,
    #[serde(flatten)]
    pub stats: RouteRow,
}

#[derive(Clone, Debug, Serialize)]
pub struct CapacityReport {
    pub workload: Workload,
    pub api: ApiKind,
    pub target: String,
    pub started_at: String,
    pub command: String,
    pub p99_bound_ms: f64,
    pub steps: Vec<StepResult>,
    /// The step with the most requests/s among those that held.
    pub capacity: Option<StepResult>,
    /// Checked after the `stock` workload only.
    pub invariant: Option<InvariantReport>,
    /// The login storm beside the steps, when there was one: its users, and its logins
    /// over the whole run (refusals among the failures).
    pub login_storm: Option<(usize, RouteRow)>,
}

impl CapacityReport {
    pub fn text(&self) -> String {
        let mut out = format!(
            "ecanteen-loadtest capacity: {} over {} against {}, p99 bound {:.0} ms\n\n\
             {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  held\n",
            format!("{:?}", self.workload).to_lowercase(),
            format!("{:?}", self.api).to_lowercase(),
            self.target,
            self.p99_bound_ms,
            "users",
            "requests",
            "fails",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms"
        );
        for step in &self.steps {
            let s = &step.stats;
            out.push_str(&format!(
                "{:>6} {:>9} {:>9} {:>9.0} {:>9.1} {:>9.1} {:>9.1}  {}\n",
                step.users,
                s.requests,
                s.failures,
                s.rps,
                s.percentile(50),
                s.percentile(99),
                s.max_ms,
                if step.held { "yes" } else { "no" }
            ));
        }
        match &self.capacity {
            Some(best) => out.push_str(&format!(
                "\nCapacity: {:.0} requests/s at {} users (p99 {:.1} ms, no failure)\n",
                best.stats.rps,
                best.users,
                best.stats.percentile(99)
            )),
            None => out.push_str("\nCapacity: no step held\n"),
        }
        if let Some((users, s)) = &self.login_storm {
            out.push_str(&format!(
                "\nBeside the steps, a login storm of {users} users: {} logins ({:.0}/s), {} \
                 refused or failed ({} refusals), p50 {:.1} ms, p99 {:.1} ms\n",
                s.requests,
                s.rps,
                s.failures,
                s.refusals,
                s.percentile(50),
                s.percentile(99)
            ));
        }
        if let Some(inv) = &self.invariant {
            out.push_str(&inv.summary());
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out =
            String::from("Users,Held,Requests,Failures,Requests/s,Average,50%,90%,99%,Max,Route\n");
        for step in &self.steps {
            let s = &step.stats;
            out.push_str(&format!(
                "{},{},{},{},{:.1},{:.2},{:.1},{:.1},{:.1},{:.1},{}\n",
                step.users,
                step.held,
                s.requests,
                s.failures,
                s.rps,
                s.avg_ms,
                s.percentile(50),
                s.percentile(90),
                s.percentile(99),
                s.max_ms,
                csv_field(&format!("{} {}", s.method, s.name))
            ));
        }
        out
    }

    /// Writes `capacity.txt`, `capacity.csv` and `capacity.json` into `dir`.
    pub fn write_to(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("capacity.txt"), self.text())?;
        std::fs::write(dir.join("capacity.csv"), self.csv())?;
        std::fs::write(
            dir.join("capacity.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        Ok(())
    }
}

/// The user counts of the steps: `start`, `start·factor`, … up to `max`.
pub fn steps(start: usize, factor: usize, max: usize) -> Vec<usize> {
    let mut steps = Vec::new();
    let mut users = start.max(1);
    while users <= max {
        steps.push(users);
        users = users.saturating_mul(factor.max(2));
    }
    steps
}

/// What a capacity run found: each step, the invariant check, and the login storm's
/// users and numbers when there was one.
pub type Found = (
    Vec<StepResult>,
    Option<InvariantReport>,
    Option<(usize, RouteRow)>,
);

/// Runs the steps; answers the per-step numbers, the invariant check and the storm's.
pub async fn run(options: CapacityOptions) -> anyhow::Result<Found> {
    let plan = steps(options.start_users, options.factor, options.max_users);
    let most = plan.last().copied().unwrap_or(1);
    let setup = Arc::new(Recorder::new());
    let owner = Partner::new(
        &options.base,
        options.api,
        format!("cap-{}", options.run_id),
        options.request_timeout,
        setup.clone(),
    )?;
    owner.register(&options.password).await?;
    owner.login(&options.password).await?;
    let token = owner.create_token("capacity").await?;

    // The products: 50 for the catalogue to read, or one per user of the largest step.
    let count = match options.workload {
        Workload::Reads => SEEDED_PRODUCTS,
        Workload::Stock => most,
    };
    let mut expectations = Vec::with_capacity(count);
    for n in 0..count {
        let product = NewProduct {
            name: format!("Es teh {n}"),
            description: "capacity".into(),
            price: 5_000,
            quantity: START_STOCK,
            category: "minuman",
            picture: None,
        };
        let seen = owner
            .create_product(&product, &format!("cap-{}-c{n}", options.run_id))
            .await?;
        expectations.push(Expectation {
            product_id: seen.id,
            token: token.clone(),
            initial: seen.quantity,
            ..Expectation::default()
        });
    }

    // The storm starts before the first step and stops after the last.
    let storm_recorder = Arc::new(Recorder::new());
    let storming = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut storm = JoinSet::new();
    for _ in 0..options.login_storm {
        let partner = Partner::new(
            &options.base,
            options.api,
            format!("cap-{}", options.run_id),
            options.request_timeout,
            storm_recorder.clone(),
        )?;
        let (password, storming) = (options.password.clone(), storming.clone());
        storm.spawn(async move {
            while storming.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = partner.login(&password).await;
            }
        });
    }
    if options.login_storm > 0 {
        // Long enough for the password workers to be full before anything is measured.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    let mut results = Vec::new();
    for (step_index, users) in plan.into_iter().enumerate() {
        let recorder = Arc::new(Recorder::new());
        let deadline = Instant::now() + options.step_duration;
        let mut tasks = JoinSet::new();
        for user in 0..users {
            // Reads are public and go anonymous, as a catalogue page's visitors do.
            let partner = match options.workload {
                Workload::Reads => Partner::new(
                    &options.base,
                    options.api,
                    String::new(),
                    options.request_timeout,
                    recorder.clone(),
                )?,
                Workload::Stock => Partner::with_token(
                    &options.base,
                    options.api,
                    &token,
                    options.request_timeout,
                    recorder.clone(),
                )?,
            };
            let product = expectations
                .get(user)
                .map(|e| e.product_id)
                .unwrap_or_default();
            let workload = options.workload;
            let prefix = format!("cap-{}-{step_index}-{user}", options.run_id);
            tasks.spawn(async move {
                // (delta, idempotency key, acknowledged)
                let mut changes: Vec<(i64, String, bool)> = Vec::new();
                let mut n = 0_u64;
                while Instant::now() < deadline {
                    n += 1;
                    match workload {
                        Workload::Reads => {
                            let _ = partner.read_page().await;
                        }
                        Workload::Stock => {
                            let delta = if n % 2 == 1 { -1 } else { 1 };
                            let key = format!("{prefix}-{n}");
                            let ok = partner.adjust_stock(product, delta, &key).await.is_ok();
                            changes.push((delta, key, ok));
                        }
                    }
                }
                (user, changes)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (user, changes) = done?;
            let Some(expectation) = expectations.get_mut(user) else {
                continue;
            };
            for (delta, key, acknowledged) in changes {
                if acknowledged {
                    expectation.acknowledge(delta, key);
                } else {
                    expectation.unacknowledged_keys.push(key);
                }
            }
        }
        let snapshot = recorder.snapshot();
        let route = snapshot
            .routes
            .keys()
            .next()
            .copied()
            .unwrap_or(crate::metrics::Route::new("", "none"));
        let stats = RouteRow::of(route, &snapshot.total, snapshot.elapsed.as_secs_f64());
        let held = stats.requests > 0
            && stats.failures == 0
            && stats.percentile(99) <= options.p99_bound.as_secs_f64() * 1000.0;
        results.push(StepResult { users, held, stats });
        if !held {
            break;
        }
    }

    storming.store(false, std::sync::atomic::Ordering::Relaxed);
    while storm.join_next().await.is_some() {}
    let login_storm = (options.login_storm > 0).then(|| {
        let snapshot = storm_recorder.snapshot();
        let login = crate::metrics::Route::sign_in("", "login storm");
        (
            options.login_storm,
            RouteRow::of(login, &snapshot.total, snapshot.elapsed.as_secs_f64()),
        )
    });

    let invariant = match options.workload {
        Workload::Reads => None,
        Workload::Stock => {
            Some(invariant::check(&options.base, expectations, options.request_timeout).await?)
        }
    };
    Ok((results, invariant, login_storm))
}

/// The step with the most requests/s among those that held.
pub fn best(steps: &[StepResult]) -> Option<StepResult> {
    steps
        .iter()
        .filter(|s| s.held)
        .max_by(|a, b| a.stats.rps.total_cmp(&b.stats.rps))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_multiply_up_to_the_maximum() {
        assert_eq!(steps(1, 2, 64), vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(steps(8, 2, 100), vec![8, 16, 32, 64]);
        assert_eq!(
            steps(0, 1, 4),
            vec![1, 2, 4],
            "at least 1 user, at least doubling"
        );
        assert!(steps(8, 2, 4).is_empty());
    }
}
