//! The upstreams file and the one-command stack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecanteen_test_client::documents;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_added_to_and_removed_from_the_file_under_load_fail_no_request() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upstreams");
    std::fs::write(&file, format!("# the replicas\n{}\n", a.addr)).unwrap();
    let balancer = Balancer::start_with(&["--upstreams".into(), file.display().to_string()]);
    balancer.wait_ready(1);

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (stop, failed, url) = (stop.clone(), failed.clone(), balancer.url.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::SeqCst) {
                match http.get(format!("{url}/who")).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Add two (one weighted); they take traffic within two seconds.
    let added = Instant::now();
    std::fs::write(&file, format!("{}\n{} 2\n{}\n", a.addr, b.addr, c.addr)).unwrap();
    while b.hits() == 0 || c.hits() == 0 {
        assert!(
            added.elapsed() < Duration::from_secs(2),
            "new replicas got no traffic in 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A malformed file changes nothing.
    std::fs::write(&file, format!("{}\nthis is not an address\n", a.addr)).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        balancer.status().unwrap()["ready"],
        3,
        "the previous set stays"
    );

    // Nor does an empty one (a file caught mid-write looks like this).
    std::fs::write(&file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        balancer.status().unwrap()["ready"],
        3,
        "an empty list is refused"
    );

    // Remove the first: it drains, and the rest carry on.
    std::fs::write(&file, format!("{} 2\n{}\n", b.addr, c.addr)).unwrap();
    balancer.wait_for(
        |s| s["upstreams"].as_array().unwrap().len() == 2,
        Duration::from_secs(2),
    );
    let a_hits = a.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        a.hits() <= a_hits + 3,
        "a removed replica gets no new requests"
    );
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_starts_supervises_and_stops_the_replicas() {
    let db = Database::new();
    api_bin();
    let balancer = Balancer::start_with(&[
        "--spawn".into(),
        "2".into(),
        "--database-url".into(),
        db.url.clone(),
        "--grace-secs".into(),
        "2".into(),
    ]);
    let status = balancer.wait_ready(2);
    let mut c = partner(&balancer.url, "spawned").await;
    let me = c.gql(documents::ME, json!({})).await;
    assert_eq!(me["data"]["me"]["username"], "spawned");

    // A replica that dies is restarted.
    let first = status["upstreams"][0]["addr"].as_str().unwrap().to_owned();
    let children = children_of(balancer.proc.pid());
    assert_eq!(children.len(), 2, "two replicas: {children:?}");
    std::process::Command::new("kill")
        .args(["-9", &children[0].to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = children_of(balancer.proc.pid());
        if now.len() == 2 && !now.contains(&children[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead replica was not restarted: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = balancer.wait_ready(2);
    // The same slot, on the same port, restarted once.
    let restarts: Vec<u64> = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["restarts"].as_u64().unwrap())
        .collect();
    assert_eq!(restarts.iter().sum::<u64>(), 1, "{status}");
    assert_eq!(status["upstreams"][0]["addr"], first.as_str(), "{status}");
    let me = c.gql(documents::ME, json!({})).await;
    assert_eq!(
        me["data"]["me"]["username"], "spawned",
        "the session lives in the database"
    );

    // SIGTERM: the balancer stops its replicas and exits.
    let mut balancer = balancer;
    balancer.proc.term();
    let exit = balancer.proc.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some(), "the balancer exited");
    let port = first.rsplit(':').next().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok() {
        assert!(
            Instant::now() < deadline,
            "a spawned replica outlived the balancer"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pids of a process's children, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may contain spaces) start at ")".
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
            && fields.first() != Some(&"Z")
        {
            out.push(pid);
        }
    }
    out
}
