//! The overload curve (issue 15): offered load against goodput and p99, over the
//! scenario runs of a sweep (`loadtest/overload.sh` makes them at 100, 1,000, 5,000 and
//! 10,000 users, for each API), read back from their `report.json`.
//!
//! Per API it states the knee (the most users served with no refusal at all), the peak
//! goodput below it, and for each run past it whether the goals hold: goodput at least
//! [`GOODPUT_SHARE`] of that peak, p99 of admitted requests under [`P99_BOUND_MS`], no
//! fault, and the ledger invariant.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::report::{chart, escape, Overload};

/// Past the knee, goodput keeps at least this share of the peak below it.
pub const GOODPUT_SHARE: f64 = 0.8;
/// Past the knee, the p99 of admitted requests stays under this.
pub const P99_BOUND_MS: f64 = 200.0;

/// What the curve needs of one run's `report.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Run {
    pub run: RunDetails,
    pub overload: Overload,
    pub invariant: Invariant,
    /// The run's folder, for the report's links.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RunDetails {
    pub api: String,
    pub users: usize,
    pub spawn_rate: f64,
    pub duration_s: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Invariant {
    pub violations: Vec<String>,
}

impl Run {
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut run: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a scenario report", path.display()))?;
        run.dir = dir.to_owned();
        Ok(run)
    }

    fn refused(&self) -> bool {
        self.overload.refusals > 0
    }
}

/// One API's runs, by users, with what they say together.
#[derive(Clone, Debug)]
pub struct ApiCurve {
    pub api: String,
    pub runs: Vec<Run>,
    /// The most users served with no refusal, over all the runs.
    pub knee_users: usize,
    /// The best goodput of a run with no refusal at all; none when every run refused.
    pub peak_goodput: Option<f64>,
}

/// Whether one run past the knee met each goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub goodput: bool,
    pub p99: bool,
    pub no_fault: bool,
    pub invariant: bool,
}

impl Verdict {
    pub fn all(&self) -> bool {
        self.goodput && self.p99 && self.no_fault && self.invariant
    }
}

impl ApiCurve {
    fn new(api: String, mut runs: Vec<Run>) -> Self {
        runs.sort_by_key(|r| r.run.users);
        let knee_users = runs
            .iter()
            .map(|r| r.overload.users_before_first_refusal)
            .max()
            .unwrap_or(0);
        let peak_goodput = runs
            .iter()
            .filter(|r| !r.refused())
            .map(|r| r.overload.goodput_per_s)
            .reduce(f64::max);
        Self {
            api,
            runs,
            knee_users,
            peak_goodput,
        }
    }

    /// The goals, for a run that was refused (past the knee); none for one below it.
    pub fn verdict(&self, run: &Run) -> Option<Verdict> {
        if !run.refused() {
            return None;
        }
        let o = &run.overload;
        Some(Verdict {
            goodput: self
                .peak_goodput
                .is_some_and(|peak| o.goodput_per_s >= GOODPUT_SHARE * peak),
            p99: o.admitted_p99_ms < P99_BOUND_MS,
            no_fault: o.faults == 0,
            invariant: run.invariant.violations.is_empty(),
        })
    }
}

/// The whole sweep, one curve per API.
#[derive(Clone, Debug)]
pub struct Curve {
    pub apis: Vec<ApiCurve>,
}

impl Curve {
    pub fn new(runs: Vec<Run>) -> Self {
        let mut apis: Vec<String> = runs.iter().map(|r| r.run.api.clone()).collect();
        apis.sort();
        apis.dedup();
        let apis = apis
            .into_iter()
            .map(|api| {
                let of_api = runs.iter().filter(|r| r.run.api == api).cloned().collect();
                ApiCurve::new(api, of_api)
            })
            .collect();
        Self { apis }
    }

    /// Whether every run past its API's knee met every goal.
    pub fn holds(&self) -> bool {
        self.apis
            .iter()
            .all(|c| c.runs.iter().all(|r| c.verdict(r).is_none_or(|v| v.all())))
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.apis {
            let _ = writeln!(
                out,
                "{}: knee at {} users or more (the most served with no refusal); peak goodput \
                 below it {}",
                c.api,
                c.knee_users,
                c.peak_goodput
                    .map_or("not measured (every run refused)".to_owned(), |g| format!(
                        "{g:.1}/s"
                    ))
            );
            let _ = writeln!(
                out,
                "{:>7} {:>12} {:>11} {:>9} {:>7} {:>10}  past the knee",
                "users", "goodput/s", "p99 ms", "refusals", "faults", "invariant"
            );
            for r in &c.runs {
                let o = &r.overload;
                let verdict = match c.verdict(r) {
                    None => "below it".to_owned(),
                    Some(v) => describe(&v),
                };
                let _ = writeln!(
                    out,
                    "{:>7} {:>12.1} {:>11.1} {:>9} {:>7} {:>10}  {verdict}",
                    r.run.users,
                    o.goodput_per_s,
                    o.admitted_p99_ms,
                    o.refusals,
                    o.faults,
                    if r.invariant.violations.is_empty() {
                        "holds"
                    } else {
                        "VIOLATED"
                    },
                );
            }
            out.push('\n');
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from(
            "api,users,spawn_rate,duration_s,goodput_per_s,admitted_p99_ms,refusals,faults,\
             users_before_first_refusal,invariant_holds,goals_met\n",
        );
        for c in &self.apis {
            for r in &c.runs {
                let o = &r.overload;
                let _ = writeln!(
                    out,
                    "{},{},{},{:.0},{:.1},{:.1},{},{},{},{},{}",
                    c.api,
                    r.run.users,
                    r.run.spawn_rate,
                    r.run.duration_s,
                    o.goodput_per_s,
                    o.admitted_p99_ms,
                    o.refusals,
                    o.faults,
                    o.users_before_first_refusal,
                    r.invariant.violations.is_empty(),
                    c.verdict(r)
                        .map_or("below the knee".to_owned(), |v| v.all().to_string()),
                );
            }
        }
        out
    }

    /// A page with the table and two charts over users: goodput, and the p99 of admitted
    /// requests, one line per API. Each run's report is linked relative to `page_dir`,
    /// where the page is written, when the run is in it (as `overload.sh` arranges), so
    /// the folder can be moved whole.
    pub fn html(&self, page_dir: &Path) -> String {
        let mut users: Vec<usize> = self
            .apis
            .iter()
            .flat_map(|c| c.runs.iter().map(|r| r.run.users))
            .collect();
        users.sort_unstable();
        users.dedup();
        let xs: Vec<f64> = users.iter().map(|&u| u as f64).collect();
        const COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
        let series = |f: fn(&Overload) -> f64| -> Vec<(&str, &str, Vec<f64>)> {
            self.apis
                .iter()
                .zip(COLOURS.iter().cycle())
                .map(|(c, colour)| {
                    let ys = users
                        .iter()
                        .map(|u| {
                            c.runs
                                .iter()
                                .find(|r| r.run.users == *u)
                                .map_or(f64::NAN, |r| f(&r.overload))
                        })
                        .collect();
                    (c.api.as_str(), *colour, ys)
                })
                .collect()
        };
        let mut out = String::from(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>ecanteen-loadtest: the overload curve</title><style>\
             body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
             table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;\
             padding:.3em .6em;text-align:right}.ok{color:#176f2c}.bad{color:#b00020}\
             svg{background:#fafafa;border:1px solid #ddd}</style></head><body>\
             <h1>The overload curve</h1>",
        );
        let _ = write!(
            out,
            "<p>Goals past the knee: goodput at least {:.0} % of the peak below it, p99 of \
             admitted requests under {P99_BOUND_MS:.0} ms, no fault (5xx other than a \
             refusal, timeout, broken connection), the invariant holds: <strong class=\"{}\">{}\
             </strong>.</p>",
            GOODPUT_SHARE * 100.0,
            if self.holds() { "ok" } else { "bad" },
            if self.holds() { "met" } else { "not met" }
        );
        out.push_str(
            "<table><tr><th>API</th><th>users</th><th>goodput/s</th><th>p99 admitted (ms)</th>\
             <th>refusals</th><th>faults</th><th>users before the first refusal</th>\
             <th>invariant</th><th>past the knee</th><th>run</th></tr>",
        );
        for c in &self.apis {
            for r in &c.runs {
                let o = &r.overload;
                let verdict = c.verdict(r);
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
                     <td><a href=\"{}/report.html\">report</a></td></tr>",
                    escape(&c.api),
                    r.run.users,
                    o.goodput_per_s,
                    o.admitted_p99_ms,
                    o.refusals,
                    o.faults,
                    o.users_before_first_refusal,
                    if r.invariant.violations.is_empty() {
                        "holds"
                    } else {
                        "violated"
                    },
                    match verdict {
                        Some(v) if !v.all() => "bad",
                        _ => "ok",
                    },
                    verdict.map_or("below it".to_owned(), |v| escape(&describe(&v))),
                    escape(
                        &r.dir
                            .strip_prefix(page_dir)
                            .unwrap_or(&r.dir)
                            .display()
                            .to_string()
                    ),
                );
            }
        }
        out.push_str("</table>");
        for c in &self.apis {
            let _ = write!(
                out,
                "<p>{}: the knee is at {} users or more.</p>",
                escape(&c.api),
                c.knee_users
            );
        }
        out.push_str("<h2>Goodput (successful requests off the sign-in routes, per second)</h2>");
        out.push_str(&chart(
            &xs,
            &series(|o| o.goodput_per_s),
            "goodput per second",
            "users",
        ));
        out.push_str("<h2>p99 of admitted requests (ms)</h2>");
        out.push_str(&chart(&xs, &series(|o| o.admitted_p99_ms), "ms", "users"));
        out.push_str("</body></html>\n");
        out
    }

    /// Writes `curve.txt`, `curve.csv` and `curve.html` into `dir`.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("curve.txt"), self.text())?;
        std::fs::write(dir.join("curve.csv"), self.csv())?;
        std::fs::write(dir.join("curve.html"), self.html(dir))?;
        Ok(())
    }
}

fn describe(v: &Verdict) -> String {
    let missed: Vec<&str> = [
        (v.goodput, "goodput"),
        (v.p99, "p99"),
        (v.no_fault, "faults"),
        (v.invariant, "invariant"),
    ]
    .iter()
    .filter(|(met, _)| !met)
    .map(|(_, name)| *name)
    .collect();
    if missed.is_empty() {
        "goals met".to_owned()
    } else {
        format!("missed: {}", missed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(api: &str, users: usize, goodput: f64, p99: f64, refusals: u64, faults: u64) -> Run {
        Run {
            run: RunDetails {
                api: api.to_owned(),
                users,
                spawn_rate: 50.0,
                duration_s: 150.0,
            },
            overload: Overload {
                goodput_per_s: goodput,
                admitted_p99_ms: p99,
                refusals,
                faults,
                peak_users: users,
                users_before_first_refusal: if refusals == 0 { users } else { users / 10 },
            },
            invariant: Invariant { violations: vec![] },
            dir: PathBuf::from(format!("target/loadtest/{api}-{users}")),
        }
    }

    #[test]
    fn the_knee_and_the_peak_come_from_runs_without_refusals() {
        let curve = Curve::new(vec![
            run("rest", 1000, 450.0, 40.0, 0, 0),
            run("rest", 100, 45.0, 20.0, 0, 0),
            run("rest", 5000, 700.0, 150.0, 9000, 0),
        ]);
        let rest = &curve.apis[0];
        assert_eq!(rest.knee_users, 1000);
        assert_eq!(rest.peak_goodput, Some(450.0));
        let users: Vec<usize> = rest.runs.iter().map(|r| r.run.users).collect();
        assert_eq!(users, [100, 1000, 5000]);
        assert_eq!(rest.verdict(&rest.runs[0]), None, "below the knee");
        assert!(curve.holds());
    }

    #[test]
    fn each_goal_missed_past_the_knee_fails_the_curve_and_is_named() {
        for (past, missed) in [
            (run("graphql", 5000, 300.0, 150.0, 10, 0), "goodput"),
            (run("graphql", 5000, 500.0, 250.0, 10, 0), "p99"),
            (run("graphql", 5000, 500.0, 150.0, 10, 1), "faults"),
        ] {
            let curve = Curve::new(vec![run("graphql", 1000, 450.0, 40.0, 0, 0), past]);
            assert!(!curve.holds(), "{missed}");
            assert!(
                curve.text().contains(&format!("missed: {missed}")),
                "{}",
                curve.text()
            );
        }
        let mut lost = run("graphql", 5000, 500.0, 150.0, 10, 0);
        lost.invariant
            .violations
            .push("product 1: one change lost".into());
        assert!(!Curve::new(vec![lost]).holds());
    }

    #[test]
    fn the_page_charts_both_apis_over_users_and_escapes_paths() {
        let mut odd = run("rest", 5000, 700.0, 150.0, 9000, 0);
        odd.dir = PathBuf::from("target/<odd>");
        let curve = Curve::new(vec![
            run("rest", 1000, 450.0, 40.0, 0, 0),
            odd,
            run("graphql", 1000, 430.0, 30.0, 0, 0),
        ]);
        let html = curve.html(Path::new("target/loadtest"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("10000") || html.contains("5000 users"));
        assert!(html.contains("target/&lt;odd&gt;") && !html.contains("<odd>"));
        // A run inside the page's folder is linked relative to it.
        assert!(html.contains("href=\"rest-1000/report.html\""), "{html}");
        assert_eq!(curve.csv().lines().count(), 4);
    }

    #[test]
    fn a_report_json_reads_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let json = serde_json::json!({
            "run": {"api": "rest", "users": 100, "spawn_rate": 50.0, "duration_s": 150.2,
                    "started_at": "x", "target": "y", "think_ms": [1000, 3000], "command": "z"},
            "overload": {"goodput_per_s": 45.5, "admitted_p99_ms": 20.0, "refusals": 0,
                         "faults": 0, "peak_users": 100, "users_before_first_refusal": 100},
            "invariant": {"products_checked": 1, "movements_read": 2,
                          "acknowledged_changes": 3, "violations": []},
            "routes": []
        });
        std::fs::write(dir.path().join("report.json"), json.to_string())?;
        let run = Run::read(dir.path())?;
        assert_eq!((run.run.users, run.overload.goodput_per_s), (100, 45.5));
        assert!(Run::read(&dir.path().join("missing")).is_err());
        Ok(())
    }
}
