//! The command line: `ecanteen-loadtest scenario …` replays the paper's experiment;
//! `ecanteen-loadtest capacity …` steps the load up until it no longer holds;
//! `ecanteen-loadtest curve DIR…` draws the overload curve from scenario runs' reports.
//!
//! Exit status: 0 when the run met its bounds, 1 when failures exceeded
//! `--max-failure-rate`, the invariant check failed or no capacity step held, 2 when the
//! run could not be carried out at all.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rand::Rng as _;

use crate::api::ApiKind;
use crate::attack::{self, Attack, AttackOptions};
use crate::capacity::{self, CapacityOptions, CapacityReport, Workload};
use crate::curve;
use crate::invariant;
use crate::metrics::Recorder;
use crate::report::{RunInfo, ScenarioReport};
use crate::scenario::{self, ScenarioOptions};

#[derive(Debug, Parser)]
#[command(name = "ecanteen-loadtest", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The paper's scenario: users ramp up and register, log in, add, view, edit, sell,
    /// restock and delete products, then log out; the invariant check ends the run.
    Scenario(ScenarioArgs),
    /// Closed-loop reads or stock changes with no think time, stepped up until p99
    /// exceeds the bound or a request fails.
    Capacity(CapacityArgs),
    /// The overload curve: goodput and p99 against users, from the reports of scenario
    /// runs (see `loadtest/overload.sh`), with the knee and the goals past it.
    Curve(CurveArgs),
    /// Hostile clients, one attack at a time at its budget, from their own address,
    /// while honest partners read and sell; each attack must leave the honest partners
    /// unharmed and the replicas ready (see `attack`). `loadtest/attack.sh` runs it
    /// against a stack of its own.
    Attack(AttackArgs),
}

#[derive(Debug, Args)]
struct AttackArgs {
    #[command(flatten)]
    common: Common,
    /// The balancer's admin endpoint (its `/status` is watched, and names the spawned
    /// replicas whose memory is read).
    #[arg(
        long,
        env = "ECANTEEN_LOADTEST_ADMIN",
        default_value = "http://127.0.0.1:9090"
    )]
    admin: String,
    /// In front of another proxy (nginx): a replica to watch instead of the admin
    /// endpoint, as `URL=PID` (repeatable); its `/readyz` is asked every 100 ms and its
    /// memory read.
    #[arg(long = "replica", value_name = "URL=PID")]
    replicas: Vec<String>,
    /// The attacker's own loopback address (the honest partners use 127.0.0.1).
    #[arg(long, default_value = "127.0.0.2")]
    attacker_ip: std::net::IpAddr,
    /// Honest partners reading and selling through each attack.
    #[arg(long, default_value_t = 8)]
    honest: usize,
    /// How long each attack lasts.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// The attacks to run (default: all, in order).
    #[arg(long, value_enum, value_delimiter = ',')]
    attacks: Vec<crate::attack::Attack>,
    /// The honest partners' p99 must stay under this, in milliseconds.
    #[arg(long, default_value_t = 300.0)]
    max_p99_ms: f64,
    /// Each replica's peak resident memory must stay under this, in MiB.
    #[arg(long, default_value_t = 256.0)]
    max_replica_rss_mib: f64,
}

#[derive(Debug, Args)]
struct CurveArgs {
    /// Where to write `curve.txt`, `curve.csv` and `curve.html`.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// The scenario runs' report folders (each holds a `report.json`).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct Common {
    /// The stack's base URL, usually the balancer.
    #[arg(
        long,
        env = "ECANTEEN_LOADTEST_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    target: String,
    /// Which API the users speak.
    #[arg(long, value_enum, default_value_t = ApiKind::Rest)]
    api: ApiKind,
    /// Where to write the reports (text, CSV, JSON and, for a scenario, HTML).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// The password every simulated partner registers with.
    #[arg(long, default_value = "loadtest-password-1")]
    password: String,
    /// A request that takes longer fails as a timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
}

#[derive(Debug, Args)]
struct ScenarioArgs {
    #[command(flatten)]
    common: Common,
    /// How many users the ramp reaches.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Users started per second.
    #[arg(long, default_value_t = 1.0)]
    spawn_rate: f64,
    /// How long the run lasts, ramp included (e.g. `90s`, `5m`).
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    duration: Duration,
    /// The shortest wait after each request.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    think_min: Duration,
    /// The longest wait after each request.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    think_max: Duration,
    /// The share of new products created with a picture (0–1).
    #[arg(long, default_value_t = 0.3)]
    picture_share: f64,
    /// The run fails when more than this share of requests fails (0–1).
    #[arg(long, default_value_t = 0.0)]
    max_failure_rate: f64,
}

#[derive(Debug, Args)]
struct CapacityArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value_t = Workload::Reads)]
    workload: Workload,
    /// Users of the first step.
    #[arg(long, default_value_t = 1)]
    start_users: usize,
    /// No step has more users than this.
    #[arg(long, default_value_t = 256)]
    max_users: usize,
    /// Each step has this many times the users of the one before.
    #[arg(long, default_value_t = 2)]
    factor: usize,
    /// How long each step lasts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    step_duration: Duration,
    /// A step holds while its 99th percentile stays at or under this.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    p99_bound: Duration,
    /// This many more users log in over and over, with no think time, for the whole
    /// run: the steps then measure everyone else while password work is saturated.
    #[arg(long, default_value_t = 0)]
    login_storm: usize,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Scenario(args) => run_scenario(args).await,
            Command::Capacity(args) => run_capacity(args).await,
            Command::Curve(args) => draw_curve(&args),
            Command::Attack(args) => run_attacks(args).await,
        }
    }
}

/// Exit status 1 when an attack broke an item of the goal.
async fn run_attacks(args: AttackArgs) -> anyhow::Result<ExitCode> {
    let options = AttackOptions {
        base: args.common.target.trim_end_matches('/').to_owned(),
        admin: args
            .replicas
            .is_empty()
            .then(|| args.admin.trim_end_matches('/').to_owned()),
        replicas: args
            .replicas
            .iter()
            .map(|r| {
                let (url, pid) = r
                    .rsplit_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--replica {r}: not URL=PID"))?;
                Ok((url.trim_end_matches('/').to_owned(), pid.parse()?))
            })
            .collect::<anyhow::Result<Vec<(String, u32)>>>()?,
        attacker_ip: args.attacker_ip,
        honest: args.honest,
        duration: args.duration,
        attacks: if args.attacks.is_empty() {
            Attack::ALL.to_vec()
        } else {
            args.attacks.clone()
        },
        password: args.common.password.clone(),
        request_timeout: args.common.request_timeout,
        run_id: run_id(),
        max_p99_ms: args.max_p99_ms,
        max_replica_rss_mib: args.max_replica_rss_mib,
    };
    let outcomes = attack::run(options.clone()).await?;
    let table = attack::table(&outcomes, &options, &command_line());
    print!("{table}");
    if let Some(dir) = &args.common.report_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("attack.md"), &table)?;
        println!("Report written to {}", dir.join("attack.md").display());
    }
    Ok(if outcomes.iter().all(|o| o.holds(&options)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Exit status 1 when a run past the knee missed a goal.
fn draw_curve(args: &CurveArgs) -> anyhow::Result<ExitCode> {
    let runs = args
        .runs
        .iter()
        .map(|dir| curve::Run::read(dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let curve = curve::Curve::new(runs);
    print!("{}", curve.text());
    if let Some(dir) = &args.report_dir {
        curve.write_to(dir)?;
        println!("Curve written to {}", dir.display());
    }
    Ok(if curve.holds() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How often the progress line is printed, and the window its rates cover.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Prints a progress line to stderr every [`PROGRESS_EVERY`], as Locust and k6 do, so a
/// long run shows where it is: users, requests/s, failures/s (refusals apart), p95.
async fn report_progress(recorder: Arc<Recorder>) {
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        eprintln!("{}", recorder.progress(PROGRESS_EVERY.as_secs() as usize));
    }
}

async fn run_scenario(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(args.spawn_rate > 0.0, "--spawn-rate must be positive");
    anyhow::ensure!(
        args.think_max >= args.think_min,
        "--think-max must be at least --think-min"
    );
    let common = args.common;
    let started_at = chrono::Utc::now().to_rfc3339();
    let options = ScenarioOptions {
        base: common.target.clone(),
        api: common.api,
        users: args.users,
        spawn_rate: args.spawn_rate,
        duration: args.duration,
        think_min: args.think_min,
        think_max: args.think_max,
        picture_share: args.picture_share.clamp(0.0, 1.0),
        password: common.password.clone(),
        request_timeout: common.request_timeout,
        run_id: run_id(),
    };
    let recorder = Arc::new(Recorder::new());
    let progress = tokio::spawn(report_progress(recorder.clone()));
    let expectations = scenario::run(options, recorder.clone()).await;
    progress.abort();
    let snapshot = recorder.snapshot();
    let invariant = invariant::check(&common.target, expectations, common.request_timeout).await?;
    let report = ScenarioReport::new(
        RunInfo {
            started_at,
            target: common.target,
            api: format!("{:?}", common.api).to_lowercase(),
            users: args.users,
            spawn_rate: args.spawn_rate,
            duration_s: snapshot.elapsed.as_secs_f64(),
            think_ms: (
                args.think_min.as_millis() as u64,
                args.think_max.as_millis() as u64,
            ),
            command: command_line(),
        },
        &snapshot,
        invariant,
    );
    print!("{}", report.text());
    if let Some(dir) = &common.report_dir {
        report.write_to(dir)?;
        println!("Reports written to {}", dir.display());
    }
    let mut passed = report.invariant.holds();
    if report.total.requests == 0 {
        eprintln!("no request was made");
        passed = false;
    }
    if report.total.failure_rate > args.max_failure_rate {
        eprintln!(
            "{:.2} % of requests failed; --max-failure-rate allows {:.2} %",
            report.total.failure_rate * 100.0,
            args.max_failure_rate * 100.0
        );
        passed = false;
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_capacity(args: CapacityArgs) -> anyhow::Result<ExitCode> {
    let common = args.common;
    let started_at = chrono::Utc::now().to_rfc3339();
    let options = CapacityOptions {
        base: common.target.clone(),
        api: common.api,
        workload: args.workload,
        start_users: args.start_users,
        max_users: args.max_users,
        factor: args.factor,
        step_duration: args.step_duration,
        p99_bound: args.p99_bound,
        password: common.password.clone(),
        request_timeout: common.request_timeout,
        run_id: run_id(),
        login_storm: args.login_storm,
    };
    anyhow::ensure!(
        !capacity::steps(args.start_users, args.factor, args.max_users).is_empty(),
        "--start-users is above --max-users"
    );
    let (steps, invariant, login_storm) = capacity::run(options).await?;
    let report = CapacityReport {
        workload: args.workload,
        api: common.api,
        target: common.target,
        started_at,
        command: command_line(),
        p99_bound_ms: args.p99_bound.as_secs_f64() * 1000.0,
        capacity: capacity::best(&steps),
        steps,
        invariant,
        login_storm,
    };
    print!("{}", report.text());
    if let Some(dir) = &common.report_dir {
        report.write_to(dir)?;
        println!("Reports written to {}", dir.display());
    }
    let passed = report.capacity.is_some() && report.invariant.as_ref().is_none_or(|i| i.holds());
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Six base-36 characters that keep this run's usernames and keys apart from earlier runs'.
fn run_id() -> String {
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| char::from_digit(rng.gen_range(0..36), 36).unwrap_or('0'))
        .collect()
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// `250ms`, `15s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 15s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_or_without_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "ecanteen-loadtest",
            "scenario",
            "--users",
            "20",
            "--duration",
            "15s",
            "--api",
            "graphql",
        ]);
        assert!(cli.is_ok(), "{cli:?}");
        assert!(
            Cli::try_parse_from(["ecanteen-loadtest", "capacity", "--workload", "stock"]).is_ok()
        );
        assert!(Cli::try_parse_from(["ecanteen-loadtest", "scenario", "--api", "soap"]).is_err());
        assert!(Cli::try_parse_from(["ecanteen-loadtest", "curve", "a", "b"]).is_ok());
        assert!(
            Cli::try_parse_from(["ecanteen-loadtest", "curve"]).is_err(),
            "no run"
        );
    }
}
