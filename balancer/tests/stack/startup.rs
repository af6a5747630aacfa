//! Starting the stack as a newcomer does: a fresh database, ports already taken, and
//! the logs of the balancer and of the replicas it spawns.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Starts `ecanteen-balancer --spawn` with everything it prints going to `log`.
fn spawn_logging(
    db: &Database,
    replicas: usize,
    log: &std::path::Path,
    extra: &[&str],
) -> Balancer {
    let file = File::create(log).unwrap();
    let mut args: Vec<String> = ["--spawn", &replicas.to_string(), "--database-url", &db.url]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(["--grace-secs".into(), "1".into()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Balancer::start_logging(
        &args,
        "info",
        Stdio::from(file.try_clone().unwrap()),
        Stdio::from(file),
    )
}

fn stop(mut balancer: Balancer) {
    balancer.proc.term();
    assert!(
        balancer.proc.wait_exit(Duration::from_secs(15)).is_some(),
        "the balancer exited"
    );
}

/// Three replicas migrating one new SQLite file at the same moment used to lose the
/// race with "database is locked" and a backtrace, on the very first screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_a_fresh_file_start_without_an_error_ten_times() {
    api_bin();
    for run in 0..10 {
        let db = Database::new();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stack.log");
        let balancer = spawn_logging(&db, 3, &log, &[]);
        let status = balancer.wait_ready(3);
        stop(balancer);
        let text = std::fs::read_to_string(&log).unwrap();
        for bad in ["ERROR", "WARN", "locked", "panicked", "backtrace"] {
            assert!(
                !text.contains(bad),
                "run {run}: {bad:?} in the log:\n{text}"
            );
        }
        // Each replica's own lines reach the balancer's output, under its address.
        for upstream in status["upstreams"].as_array().unwrap() {
            let prefix = format!("{} | ", upstream["addr"].as_str().unwrap());
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&prefix) && l.contains("listening")),
                "run {run}: no line from {prefix:?}:\n{text}"
            );
        }
    }
}

/// In JSON, every line is one object: the balancer's own, and each replica's with a
/// `replica` field, among them one access line per request with the request's id, in
/// each process, naming the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_replica_and_the_access_log_follows_a_request_id() {
    let db = Database::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stack.log");
    let balancer = spawn_logging(&db, 1, &log, &["--log-format", "json"]);
    let status = balancer.wait_ready(1);
    let replica = status["upstreams"][0]["addr"].as_str().unwrap().to_owned();
    let r = client()
        .post(format!("{}/graphql", balancer.url))
        .header("x-request-id", "trace-me-7")
        .json(&serde_json::json!({ "query": "{ products(first: 1) { totalCount } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The line is written as the answer leaves; give the forwarder a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (access, front) = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["request_id"] == "trace-me-7")
            .collect();
        // The replica's line (forwarded with its address) and the balancer's own.
        let replicas = lines.iter().find(|l| l["replica"].is_string());
        let balancers = lines.iter().find(|l| l["replica"].is_null());
        if let (Some(replicas), Some(balancers)) = (replicas, balancers) {
            break (replicas.clone(), balancers.clone());
        }
        assert!(Instant::now() < deadline, "no access line:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(access["replica"], replica.as_str(), "{access}");
    assert_eq!(access["message"], "access", "{access}");
    assert_eq!(access["method"], "POST", "{access}");
    assert_eq!(access["route"], "/graphql", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
    // The balancer's access line names the trace the replica's request span carries.
    assert_eq!(front["message"], "access", "{front}");
    let trace_id = front["trace_id"].as_str().unwrap_or_default();
    assert_eq!(trace_id.len(), 32, "{front}");
    assert_eq!(access["span"]["trace_id"], trace_id, "{access}");
    stop(balancer);
    let text = std::fs::read_to_string(&log).unwrap();
    // The balancer probed /readyz every 200 ms: the probes are not in the access log.
    assert!(!text.contains(r#""route":"/readyz""#), "{text}");
    for line in text.lines() {
        // The listening line on standard output is the one line meant for scripts.
        if line.starts_with("ecanteen-balancer listening") {
            continue;
        }
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{text}"));
        assert!(object.is_object(), "{line}");
    }
}

/// A port that is taken ends the balancer at once: a non-zero exit, one line on
/// standard error that says which port, and no replica started.
#[test]
fn a_taken_port_or_admin_port_ends_the_balancer_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for (flag, words) in [
        ("--listen", "cannot listen on"),
        ("--admin", "cannot serve the admin endpoint on"),
    ] {
        let mut args = vec!["--listen".to_owned(), free_addr().to_string()];
        args.extend(["--admin".to_owned(), free_addr().to_string()]);
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = taken_addr.clone();
        args.extend(["--upstream".to_owned(), "127.0.0.1:9".to_owned()]);
        let mut child = Command::new(balancer_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{flag} on a taken port: the balancer kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!status.success(), "{flag}: {status}");
        assert!(!stdout.contains("listening"), "{flag}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{flag}: {stderr}");
        assert!(
            stderr.contains(words) && stderr.contains(&taken_addr),
            "{flag}: {stderr}"
        );
        assert!(stderr.to_lowercase().contains("in use"), "{flag}: {stderr}");
    }
}
