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
        Some(file.try_clone().unwrap()),
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
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        args.extend(["--admin".to_owned(), "127.0.0.1:0".to_owned()]);
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

/// Issue #39: `--spawn` picked each port by binding port 0 and letting it go, and the
/// replica bound it later, so a second pick, or any other process, could get the same
/// port first; the loser was restarted on its twin's port forever. Here another process
/// does its worst: one thread binds every address the balancer announces a replica on,
/// the moment the line is written, and another binds and lets go of ephemeral ports
/// without pause. Every run still ends with `n` distinct replicas, all ready, none
/// restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_replicas_get_distinct_ports_no_other_process_can_take() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    api_bin();
    const N: usize = 8;
    for run in 0..4 {
        let db = Database::new();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stack.log");
        let done = Arc::new(AtomicBool::new(false));
        // The threads stop however the run ends (a failed assertion included), so they
        // never go on loading the machine under the other tests.
        struct Stop(Arc<AtomicBool>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(done.clone());
        let churn = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(socket) = std::net::TcpListener::bind("127.0.0.1:0") {
                        held.push_back(socket);
                    }
                    if held.len() > 200 {
                        held.pop_front();
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };
        let thief = {
            let done = done.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead as _, Seek as _};
                let mut stolen = Vec::new();
                let mut tried = HashSet::new();
                let mut read = 0;
                while !done.load(Ordering::Relaxed) {
                    // What the log gained since the last look, whole lines only.
                    let mut fresh = Vec::new();
                    if let Ok(mut file) = std::fs::File::open(&log) {
                        let _ = file.seek(std::io::SeekFrom::Start(read));
                        for line in std::io::BufReader::new(file).split(b'\n') {
                            let Ok(line) = line else { break };
                            read += line.len() as u64 + 1;
                            fresh.push(String::from_utf8_lossy(&line).into_owned());
                        }
                    }
                    for line in fresh.iter().filter(|l| l.contains("replica started")) {
                        let Some(addr) = line
                            .split_once("replica=")
                            .and_then(|(_, rest)| rest.split(' ').next())
                        else {
                            continue;
                        };
                        if tried.insert(addr.to_owned()) {
                            if let Ok(socket) = std::net::TcpListener::bind(addr) {
                                stolen.push(socket);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                stolen.len()
            })
        };
        let balancer = spawn_logging(&db, N, &log, &[]);
        let status = balancer.wait_for(
            |s| s["ready"].as_u64() == Some(N as u64),
            Duration::from_secs(90),
        );
        done.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        let stolen = thief.join().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            stolen, 0,
            "run {run}: another process took a replica's port:\n{text}"
        );
        let addrs: HashSet<_> = status["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["addr"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(addrs.len(), N, "run {run}: {status}");
        let replicas = status["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), N, "run {run}: {status}");
        for replica in replicas {
            assert_eq!(replica["state"], "running", "run {run}: {status}");
            assert_eq!(replica["restarts"], 0, "run {run}: {status}\n{text}");
            assert!(
                addrs.contains(replica["addr"].as_str().unwrap()),
                "{status}"
            );
        }
        assert!(!text.contains("in use"), "run {run}:\n{text}");
        stop(balancer);
    }
}

/// A replica that cannot come up is not restarted in silence: after a few exits within
/// seconds of their start, each exit is an error in the log and `/status` shows the slot
/// as failing, with how its last run ended.
#[test]
fn a_replica_that_keeps_exiting_at_start_is_shown_failing() {
    let db = Database::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stack.log");
    let balancer = spawn_logging(&db, 1, &log, &["--api-bin", "/bin/false"]);
    let status = balancer.wait_for(
        |s| s["replicas"][0]["state"] == "failing",
        Duration::from_secs(20),
    );
    let replica = &status["replicas"][0];
    assert_eq!(replica["last_exit"], "exit status: 1", "{status}");
    assert!(replica["restarts"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["ready"], 0, "{status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("ERROR") && text.contains("keeps exiting") {
            break;
        }
        assert!(Instant::now() < deadline, "no error in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(balancer);
}

/// Port 0 for the proxy and the admin endpoint: the balancer picks both, holds them
/// from the start, and says which in its listening line; both answer there.
#[test]
fn port_zero_is_resolved_and_announced() {
    let backend = "127.0.0.1:9".to_owned();
    let balancer = Balancer::start(&[backend.parse().unwrap()], &[]);
    assert!(!balancer.url.ends_with(":0"), "{}", balancer.url);
    assert!(balancer.status().is_some());
    let port = balancer.url.rsplit(':').next().unwrap();
    // The port is the balancer's: another process cannot bind it, with or without
    // SO_REUSEADDR (std sets it).
    assert!(std::net::TcpListener::bind(format!("127.0.0.1:{port}")).is_err());
    // And the proxy answers on it once pingora has bound it (no replica is ready, so
    // the balancer itself does).
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw::status(&format!("{}/healthz", balancer.url)).is_none() {
        assert!(
            Instant::now() < deadline,
            "nothing answers at {}",
            balancer.url
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A replica takes a socket from its environment only when the hand-over is meant for
/// it (`LISTEN_PID` is its pid, or the socket is named `ecanteen-api`): a stray
/// `LISTEN_FDS`, as a development tool may leave, is ignored and `--listen` served.
#[test]
fn a_stray_listen_fds_is_ignored_by_a_replica() {
    let db = Database::new();
    let (child, line) = spawn_listening(
        Command::new(api_bin())
            .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
            .env("LISTEN_FDS", "1")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
        None,
    );
    let _replica = Proc { child };
    let addr = listening_addr(&line, "http://");
    assert_ne!(addr.port(), 0, "{line}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw::status(&format!("http://{addr}/healthz")) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the replica does not answer at {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
