//! The report of a scenario run, shaped like the paper's: per route, requests, failures,
//! average/min/max milliseconds, average size, requests/s and failures/s (its Table 2),
//! and the 50th to 100th percentiles (its Table 3); and, over time, users, requests/s
//! and response times (its Figures 21–23). Printed as text, and written as CSV, JSON and
//! a self-contained HTML page with SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::invariant::InvariantReport;
use crate::metrics::{Route, Snapshot, Stats};

/// The percentiles the paper's Table 3 lists.
pub const PERCENTILES: [u8; 8] = [50, 60, 70, 80, 90, 95, 99, 100];

/// One row of the per-route tables.
#[derive(Clone, Debug, Serialize)]
pub struct RouteRow {
    #[serde(rename = "type")]
    pub method: String,
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    /// Failures that were refusals (429 or 503 with `Retry-After`), each waited out.
    pub refusals: u64,
    pub failure_rate: f64,
    pub avg_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub avg_size_bytes: f64,
    pub rps: f64,
    pub failures_per_s: f64,
    /// `[percentile, milliseconds]`, for each of [`PERCENTILES`].
    pub percentiles_ms: Vec<(u8, f64)>,
}

impl RouteRow {
    pub fn of(route: Route, stats: &Stats, seconds: f64) -> Self {
        let seconds = seconds.max(0.001);
        Self {
            method: route.method.to_owned(),
            name: route.name.to_owned(),
            requests: stats.requests,
            failures: stats.failures,
            refusals: stats.refusals,
            failure_rate: stats.failure_rate(),
            avg_ms: stats.mean_ms(),
            min_ms: stats.min_ms(),
            max_ms: stats.max_ms(),
            avg_size_bytes: if stats.requests == 0 {
                0.0
            } else {
                stats.bytes as f64 / stats.requests as f64
            },
            rps: stats.requests as f64 / seconds,
            failures_per_s: stats.failures as f64 / seconds,
            percentiles_ms: PERCENTILES
                .iter()
                .map(|&p| (p, stats.percentile_ms(f64::from(p) / 100.0)))
                .collect(),
        }
    }

    pub fn percentile(&self, p: u8) -> f64 {
        self.percentiles_ms
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(0.0, |(_, ms)| *ms)
    }
}

/// One failure message and how often it was seen.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorRow {
    #[serde(rename = "type")]
    pub method: String,
    pub name: String,
    pub error: String,
    pub occurrences: u64,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct SecondRow {
    pub second: usize,
    pub users: usize,
    pub requests: u64,
    pub failures: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub started_at: String,
    pub target: String,
    pub api: String,
    pub users: usize,
    pub spawn_rate: f64,
    pub duration_s: f64,
    pub think_ms: (u64, u64),
    pub command: String,
}

/// How the run fared past capacity (issue 15's measures): what was served to partners
/// already signed in, what was refused, and what failed for the service's fault.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Overload {
    /// Successful requests off the sign-in routes, per second of the run.
    pub goodput_per_s: f64,
    /// The 99th percentile of requests off the sign-in routes that were not refused.
    pub admitted_p99_ms: f64,
    /// Refusals: a 429 or a 503 with `Retry-After`, on any route.
    pub refusals: u64,
    /// Failures that were the service's fault: a 5xx other than a refusal, a timeout,
    /// a broken connection.
    pub faults: u64,
    /// The most users active at once.
    pub peak_users: usize,
    /// The most users active before the first refusal; the peak when none was refused.
    /// The knee lies at or above it.
    pub users_before_first_refusal: usize,
}

impl Overload {
    pub fn of(snapshot: &Snapshot) -> Self {
        let seconds = snapshot.elapsed.as_secs_f64().max(0.001);
        let work = &snapshot.admitted_work;
        let first_refusal = snapshot
            .timeline
            .iter()
            .position(|second| second.stats.refusals > 0)
            .unwrap_or(snapshot.timeline.len());
        let users =
            |seconds: &[crate::metrics::Second]| seconds.iter().map(|s| s.users).max().unwrap_or(0);
        Self {
            goodput_per_s: (work.requests - work.failures) as f64 / seconds,
            admitted_p99_ms: work.percentile_ms(0.99),
            refusals: snapshot.total.refusals,
            faults: snapshot.total.faults,
            peak_users: users(&snapshot.timeline),
            users_before_first_refusal: users(&snapshot.timeline[..first_refusal]),
        }
    }
}

/// Everything a scenario run reports.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub run: RunInfo,
    pub routes: Vec<RouteRow>,
    pub total: RouteRow,
    pub errors: Vec<ErrorRow>,
    pub timeline: Vec<SecondRow>,
    pub overload: Overload,
    pub invariant: InvariantReport,
}

impl ScenarioReport {
    pub fn new(run: RunInfo, snapshot: &Snapshot, invariant: InvariantReport) -> Self {
        let seconds = snapshot.elapsed.as_secs_f64();
        let routes = snapshot
            .routes
            .iter()
            .map(|(route, stats)| RouteRow::of(*route, stats, seconds))
            .collect();
        let mut errors: Vec<ErrorRow> = snapshot
            .routes
            .iter()
            .flat_map(|(route, stats)| {
                stats.errors.iter().map(|(error, count)| ErrorRow {
                    method: route.method.to_owned(),
                    name: route.name.to_owned(),
                    error: error.clone(),
                    occurrences: *count,
                })
            })
            .collect();
        errors.sort_by_key(|e| std::cmp::Reverse(e.occurrences));
        let timeline = snapshot
            .timeline
            .iter()
            .enumerate()
            .map(|(second, s)| SecondRow {
                second,
                users: s.users,
                requests: s.stats.requests,
                failures: s.stats.failures,
                p50_ms: s.stats.percentile_ms(0.5),
                p95_ms: s.stats.percentile_ms(0.95),
            })
            .collect();
        Self {
            run,
            routes,
            total: RouteRow::of(Route::new("", "Aggregated"), &snapshot.total, seconds),
            errors,
            timeline,
            overload: Overload::of(snapshot),
            invariant,
        }
    }

    /// The two tables, the failures and the invariant, as plain text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let r = &self.run;
        let _ = writeln!(
            out,
            "ecanteen-loadtest: {} users ({}/s), {} API, {:.0} s against {}; think {}–{} ms",
            r.users, r.spawn_rate, r.api, r.duration_s, r.target, r.think_ms.0, r.think_ms.1
        );
        let _ = writeln!(out, "\nRequests (the paper's Table 2)");
        let _ = writeln!(
            out,
            "{:<8} {:<40} {:>8} {:>7} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9}",
            "Type",
            "Name",
            "# reqs",
            "# fails",
            "Avg ms",
            "Min ms",
            "Max ms",
            "Avg size",
            "RPS",
            "Fails/s"
        );
        for row in self.routes.iter().chain([&self.total]) {
            let _ = writeln!(
                out,
                "{:<8} {:<40} {:>8} {:>7} {:>9.1} {:>8.1} {:>9.1} {:>9.0} {:>8.2} {:>9.2}",
                row.method,
                row.name,
                row.requests,
                format!("{} ({:.1}%)", row.failures, row.failure_rate * 100.0),
                row.avg_ms,
                row.min_ms,
                row.max_ms,
                row.avg_size_bytes,
                row.rps,
                row.failures_per_s
            );
        }
        let _ = writeln!(
            out,
            "\nResponse time percentiles in ms (the paper's Table 3)"
        );
        let _ = write!(out, "{:<8} {:<40}", "Type", "Name");
        for p in PERCENTILES {
            let _ = write!(out, " {:>7}", format!("{p}%"));
        }
        let _ = writeln!(out, " {:>8}", "# reqs");
        for row in self.routes.iter().chain([&self.total]) {
            let _ = write!(out, "{:<8} {:<40}", row.method, row.name);
            for p in PERCENTILES {
                let _ = write!(out, " {:>7.1}", row.percentile(p));
            }
            let _ = writeln!(out, " {:>8}", row.requests);
        }
        if !self.errors.is_empty() {
            let _ = writeln!(
                out,
                "\nFailures ({} of them refusals: a 429 or 503 with Retry-After, waited out and \
                 sent again up to {} times)",
                self.total.refusals,
                crate::api::MAX_RETRIES
            );
            for e in &self.errors {
                let _ = writeln!(
                    out,
                    "{:>6}x {} {}: {}",
                    e.occurrences, e.method, e.name, e.error
                );
            }
        }
        let o = &self.overload;
        let _ = writeln!(
            out,
            "\nPast capacity: goodput {:.1}/s (successful requests off the sign-in routes), \
             p99 of those admitted {:.1} ms, {} refusals, {} faults (5xx, timeouts, broken \
             connections); {} users at most, {} before the first refusal",
            o.goodput_per_s,
            o.admitted_p99_ms,
            o.refusals,
            o.faults,
            o.peak_users,
            o.users_before_first_refusal
        );
        out.push('\n');
        out.push_str(&self.invariant.summary());
        out
    }

    /// Per route, with Locust's column names (its `_stats.csv`).
    pub fn requests_csv(&self) -> String {
        let mut out = String::from(
            "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
             Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s",
        );
        for p in PERCENTILES {
            let _ = write!(out, ",{p}%");
        }
        out.push('\n');
        for row in self.routes.iter().chain([&self.total]) {
            let _ = write!(
                out,
                "{},{},{},{},{:.1},{:.2},{:.2},{:.2},{:.0},{:.3},{:.3}",
                csv_field(&row.method),
                csv_field(&row.name),
                row.requests,
                row.failures,
                row.percentile(50),
                row.avg_ms,
                row.min_ms,
                row.max_ms,
                row.avg_size_bytes,
                row.rps,
                row.failures_per_s
            );
            for p in PERCENTILES {
                let _ = write!(out, ",{:.1}", row.percentile(p));
            }
            out.push('\n');
        }
        out
    }

    /// Per second of the run (Locust's `_stats_history.csv`, reduced). A second in which
    /// no request ended has no percentiles: they are left empty, not written as 0 ms,
    /// which would read as the fastest second of the run rather than a stalled one.
    pub fn history_csv(&self) -> String {
        let mut out = String::from("Second,User Count,Requests/s,Failures/s,50%,95%\n");
        for s in &self.timeline {
            let (p50, p95) = if s.requests == 0 {
                (String::new(), String::new())
            } else {
                (format!("{:.1}", s.p50_ms), format!("{:.1}", s.p95_ms))
            };
            let _ = writeln!(
                out,
                "{},{},{},{},{p50},{p95}",
                s.second, s.users, s.requests, s.failures
            );
        }
        out
    }

    /// A self-contained page: the tables, and the users, requests/s and response-time
    /// charts over time.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let r = &self.run;
        let _ = write!(
            out,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>ecanteen-loadtest report</title><style>{STYLE}</style></head><body>\
             <h1>ecanteen-loadtest</h1><p>{} users ({}/s), {} API, {:.0} s against \
             <code>{}</code>, think {}–{} ms, started {}.</p><p><code>{}</code></p>",
            r.users,
            r.spawn_rate,
            escape(&r.api),
            r.duration_s,
            escape(&r.target),
            r.think_ms.0,
            r.think_ms.1,
            escape(&r.started_at),
            escape(&r.command),
        );
        let inv = &self.invariant;
        let _ = write!(
            out,
            "<p class=\"{}\">Invariant: {} products, {} acknowledged stock changes, {} ledger \
             rows: <strong>{}</strong></p>",
            if inv.holds() { "ok" } else { "bad" },
            inv.products_checked,
            inv.acknowledged_changes,
            inv.movements_read,
            if inv.holds() { "holds" } else { "violated" }
        );
        if !inv.holds() {
            out.push_str("<ul>");
            for v in &inv.violations {
                let _ = write!(out, "<li>{}</li>", escape(v));
            }
            out.push_str("</ul>");
        }
        let o = &self.overload;
        let _ = write!(
            out,
            "<p>Past capacity: goodput <strong>{:.1}/s</strong> (successful requests off the \
             sign-in routes), p99 of those admitted <strong>{:.1} ms</strong>, {} refusals, \
             <span class=\"{}\">{} faults</span> (5xx, timeouts, broken connections); {} \
             users at most, {} before the first refusal.</p>",
            o.goodput_per_s,
            o.admitted_p99_ms,
            o.refusals,
            if o.faults == 0 { "ok" } else { "bad" },
            o.faults,
            o.peak_users,
            o.users_before_first_refusal
        );
        out.push_str(
            "<h2>Requests</h2><table><tr><th>Type</th><th>Name</th><th># requests</th>\
             <th># fails</th><th>Average (ms)</th><th>Min (ms)</th><th>Max (ms)</th>\
             <th>Average size (bytes)</th><th>RPS</th><th>Failures/s</th></tr>",
        );
        for row in self.routes.iter().chain([&self.total]) {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td>\
                 <td>{:.1}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                escape(&row.method),
                escape(&row.name),
                row.requests,
                row.failures,
                row.avg_ms,
                row.min_ms,
                row.max_ms,
                row.avg_size_bytes,
                row.rps,
                row.failures_per_s
            );
        }
        out.push_str(
            "</table><h2>Response time percentiles (ms)</h2><table><tr><th>Type</th><th>Name</th>",
        );
        for p in PERCENTILES {
            let _ = write!(out, "<th>{p}%</th>");
        }
        out.push_str("</tr>");
        for row in self.routes.iter().chain([&self.total]) {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td>",
                escape(&row.method),
                escape(&row.name)
            );
            for p in PERCENTILES {
                let _ = write!(out, "<td>{:.1}</td>", row.percentile(p));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
        if !self.errors.is_empty() {
            out.push_str("<h2>Failures</h2><table><tr><th>#</th><th>Type</th><th>Name</th><th>Error</th></tr>");
            for e in &self.errors {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e.occurrences,
                    escape(&e.method),
                    escape(&e.name),
                    escape(&e.error)
                );
            }
            out.push_str("</table>");
        }
        let seconds: Vec<f64> = self.timeline.iter().map(|s| s.second as f64).collect();
        let series =
            |f: fn(&SecondRow) -> f64| -> Vec<f64> { self.timeline.iter().map(f).collect() };
        out.push_str("<h2>Number of users</h2>");
        out.push_str(&chart(
            &seconds,
            &[("users", "#1f77b4", series(|s| s.users as f64))],
            "users",
            "s",
        ));
        out.push_str("<h2>Requests per second</h2>");
        out.push_str(&chart(
            &seconds,
            &[
                ("requests/s", "#2ca02c", series(|s| s.requests as f64)),
                ("failures/s", "#d62728", series(|s| s.failures as f64)),
            ],
            "per second",
            "s",
        ));
        out.push_str("<h2>Response times (ms)</h2>");
        out.push_str(&chart(
            &seconds,
            &[
                ("50th percentile", "#1f77b4", series(|s| s.p50_ms)),
                ("95th percentile", "#ff7f0e", series(|s| s.p95_ms)),
            ],
            "ms",
            "s",
        ));
        out.push_str("</body></html>\n");
        out
    }

    /// Writes `report.txt`, `requests.csv`, `history.csv`, `report.json` and
    /// `report.html` into `dir`.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.txt"), self.text())?;
        std::fs::write(dir.join("requests.csv"), self.requests_csv())?;
        std::fs::write(dir.join("history.csv"), self.history_csv())?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.html"), self.html())?;
        Ok(())
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;\
text-align:right}td:nth-child(2),th:nth-child(2){text-align:left}.ok{color:#176f2c}\
.bad{color:#b00020}svg{background:#fafafa;border:1px solid #ddd}";

/// A line chart of one or more series, as inline SVG: over the run's seconds (`x_unit`
/// "s"), or over anything else. A chart of a few points marks each one.
pub fn chart(xs: &[f64], series: &[(&str, &str, Vec<f64>)], unit: &str, x_unit: &str) -> String {
    const W: f64 = 800.0;
    const H: f64 = 240.0;
    const PAD: f64 = 40.0;
    let x_max = xs.last().copied().unwrap_or(0.0).max(1.0);
    let y_max = series
        .iter()
        .flat_map(|(_, _, ys)| ys.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let mut svg = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"{}\">",
        escape(unit)
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{ty}\" font-size=\"11\">{y_max:.0}</text>\
         <text x=\"4\" y=\"{y0}\" font-size=\"11\">0</text>\
         <text x=\"{x1}\" y=\"{tx}\" font-size=\"11\" text-anchor=\"end\">{x_max:.0} {}</text>",
        escape(x_unit),
        y0 = H - PAD,
        x1 = W - 10.0,
        ty = PAD + 4.0,
        tx = H - PAD + 16.0,
    );
    for (i, (label, colour, ys)) in series.iter().enumerate() {
        let points: Vec<String> = xs
            .iter()
            .zip(ys)
            // A series without a value at some x (NaN) skips that point.
            .filter(|(_, y)| y.is_finite())
            .map(|(x, y)| {
                let px = PAD + x / x_max * (W - PAD - 10.0);
                let py = H - PAD - y / y_max * (H - 2.0 * PAD);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        if points.len() <= 20 {
            for point in &points {
                if let Some((px, py)) = point.split_once(',') {
                    let _ = write!(
                        svg,
                        "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{colour}\"/>"
                    );
                }
            }
        }
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"16\" font-size=\"12\" fill=\"{colour}\">{}</text>",
            points.join(" "),
            PAD + 160.0 * i as f64,
            escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Recorder, Sample};

    fn report() -> ScenarioReport {
        let recorder = Recorder::new();
        recorder.user_started();
        for ms in 1..=10 {
            recorder.record(Sample {
                refused: false,
                route: Route::new("GET", "/ecanteen/product?user_id=[name]"),
                latency: Duration::from_millis(ms),
                size: 200,
                error: None,
            });
        }
        recorder.record(Sample {
            refused: false,
            route: Route::new("POST", "/ecanteen/product"),
            latency: Duration::from_millis(30),
            size: 50,
            error: Some("500 <INTERNAL>".into()),
        });
        let run = RunInfo {
            started_at: "2026-11-24T00:00:00Z".into(),
            target: "http://127.0.0.1:8080".into(),
            api: "rest".into(),
            users: 1,
            spawn_rate: 1.0,
            duration_s: 1.0,
            think_ms: (0, 0),
            command: "ecanteen-loadtest scenario".into(),
        };
        let invariant = InvariantReport {
            violations: vec!["product 1: <lost>".into()],
            ..InvariantReport::default()
        };
        ScenarioReport::new(run, &recorder.snapshot(), invariant)
    }

    #[test]
    fn a_second_in_which_nothing_ended_has_no_percentiles_in_the_history() {
        let mut report = report();
        let stalled = SecondRow {
            second: 1,
            users: 1,
            requests: 0,
            failures: 0,
            p50_ms: 0.0,
            p95_ms: 0.0,
        };
        report.timeline.push(stalled);
        let csv = report.history_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[1].starts_with("0,1,11,1,"), "{csv}");
        assert!(!lines[1].ends_with(','), "{csv}");
        assert_eq!(lines[2], "1,1,0,0,,", "{csv}");
    }

    #[test]
    fn the_text_has_both_tables_the_failures_and_the_verdict() {
        let text = report().text();
        assert!(text.contains("the paper's Table 2"));
        assert!(text.contains("the paper's Table 3"));
        assert!(
            text.contains("1x POST /ecanteen/product: 500 <INTERNAL>"),
            "{text}"
        );
        assert!(text.contains("VIOLATED"));
        assert!(text.contains("Aggregated"));
    }

    #[test]
    fn the_csv_has_a_row_per_route_and_the_total_with_every_percentile() {
        let csv = report().requests_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        let columns = lines[0].split(',').count();
        assert_eq!(columns, 11 + PERCENTILES.len());
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), columns, "{line}");
        }
        assert!(
            lines[1].starts_with("GET,/ecanteen/product?user_id=[name],10,0,5.0,"),
            "{csv}"
        );
    }

    #[test]
    fn the_html_escapes_what_it_shows_and_draws_three_charts() {
        let html = report().html();
        assert!(html.contains("500 &lt;INTERNAL&gt;"));
        assert!(html.contains("product 1: &lt;lost&gt;"));
        assert!(!html.contains("<INTERNAL>"));
        assert_eq!(html.matches("<svg").count(), 3);
    }

    #[test]
    fn the_json_round_trips_the_numbers() {
        let json: serde_json::Value = serde_json::to_value(report()).unwrap_or_default();
        assert_eq!(json["total"]["requests"], 11);
        assert_eq!(json["total"]["failures"], 1);
        assert_eq!(json["routes"][0]["percentiles_ms"][0][0], 50);
        assert_eq!(json["invariant"]["violations"][0], "product 1: <lost>");
    }
}
