//! Past one machine: PostgreSQL, two replicas and the balancer each on a host of its own
//! (a network namespace with its own address, joined to the others by a bridge), and
//! the client in the root namespace. Cutting a host's link is what a pulled cable, a
//! dead switch port or a partitioned cloud zone does: packets vanish, nothing answers
//! and nothing refuses.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecanteen_loadtest::invariant::{self, Expectation};
use ecanteen_test_client::requests;
use serde_json::json;

use crate::harness::*;

/// Namespaces joined by a bridge on 10.213.N.0/24; removed when dropped.
struct Hosts {
    tag: String,
    subnet: u32,
    names: Vec<String>,
}

impl Hosts {
    fn new() -> Option<Self> {
        if !is_root() {
            return None;
        }
        let id = std::process::id() % 100_000;
        let hosts = Self {
            tag: format!("ec{id}"),
            subnet: id % 250 + 1,
            names: Vec::new(),
        };
        let bridge = hosts.bridge();
        let ok = ip(&["link", "add", &bridge, "type", "bridge"])
            && ip(&[
                "addr",
                "add",
                &format!("{}/24", hosts.addr(1)),
                "dev",
                &bridge,
            ])
            && ip(&["link", "set", &bridge, "up"]);
        ok.then_some(hosts)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The address of host number `n` (1 is the root namespace, the client).
    fn addr(&self, n: u32) -> String {
        format!("10.213.{}.{n}", self.subnet)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// The root side of a host's link.
    fn link(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    /// A host named `name` at address number `n`.
    fn add(&mut self, name: &str, n: u32) {
        let (ns, link) = (self.ns(name), self.link(name));
        assert!(ip(&["netns", "add", &ns]), "netns {ns}");
        self.names.push(name.to_owned());
        assert!(ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns
        ]));
        assert!(ip(&["link", "set", &link, "master", &self.bridge(), "up"]));
        let cidr = format!("{}/24", self.addr(n));
        assert!(ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]));
        assert!(ip(&["-n", &ns, "link", "set", "eth0", "up"]));
        assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));
    }

    /// A command run on host `name`.
    fn on(&self, name: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(name)]).arg(program);
        command
    }

    fn cut(&self, name: &str) {
        assert!(ip(&["link", "set", &self.link(name), "down"]));
    }

    fn restore(&self, name: &str) {
        assert!(ip(&["link", "set", &self.link(name), "up"]));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            ip(&["link", "del", &self.link(name)]);
            ip(&["netns", "del", &self.ns(name)]);
        }
        ip(&["link", "del", &self.bridge()]);
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// PostgreSQL on the database host, listening on its address, trusting the subnet.
struct HostedPostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

impl HostedPostgres {
    fn start(hosts: &Hosts, name: &str, addr: &str) -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("ecanteen-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        run(Command::new("chown").arg("postgres:").arg(dir.path()));
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(INITDB_ARGS)
            .arg(&data));
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str("host all all 10.213.0.0/16 trust\n");
        std::fs::write(&hba, rules).unwrap();
        let options = format!(
            "-p 5432 -k {} -c listen_addresses={addr} -c fsync=off",
            dir.path().display()
        );
        run(hosts
            .on(name, Path::new("runuser"))
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-w", "-o", &options, "start"]));
        Self { dir, bin }
    }
}

impl Drop for HostedPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn replica(hosts: &Hosts, name: &str, listen: &str, database_url: &str) -> Proc {
    let mut child = hosts
        .on(name, &api_bin())
        .args(["--listen", listen, "--database-url", database_url])
        .args(["--db-timeout-secs", "2", "--request-timeout-secs", "4"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "replica on {name}: {line:?}");
    Proc { child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_other_hosts_survive_a_cut_link_and_a_lost_database() {
    let Some(mut hosts) = Hosts::new() else {
        eprintln!("skipped: network namespaces need root (this test cuts hosts' links)");
        return;
    };
    for (name, n) in [("db", 10), ("app1", 11), ("app2", 12), ("lb", 13)] {
        hosts.add(name, n);
    }
    eprintln!("hosts: namespaces up");
    let db = HostedPostgres::start(&hosts, "db", &hosts.addr(10));
    eprintln!("hosts: postgres up");
    let database_url = format!("postgres://postgres@{}:5432/postgres", hosts.addr(10));
    let app1 = format!("{}:8081", hosts.addr(11));
    let app2 = format!("{}:8081", hosts.addr(12));
    let _replicas = [
        replica(&hosts, "app1", &app1, &database_url),
        replica(&hosts, "app2", &app2, &database_url),
    ];
    let (listen, admin) = (
        format!("{}:8080", hosts.addr(13)),
        format!("{}:9090", hosts.addr(13)),
    );
    let child = hosts
        .on("lb", &balancer_bin())
        .args([
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--upstream",
            &app1,
            "--upstream",
            &app2,
        ])
        .args(["--health-interval-ms", "200", "--connect-timeout-ms", "300"])
        .args([
            "--read-timeout-secs",
            "2",
            "--rate-limit-ip",
            "0",
            "--rate-limit-partner",
            "0",
        ])
        .args(["--threads", "2"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let balancer = Balancer {
        url: format!("http://{listen}"),
        admin: format!("http://{admin}"),
        proc: Proc { child },
    };
    eprintln!("hosts: replicas and balancer started");
    balancer.wait_ready(2);
    eprintln!("hosts: ready");

    // An app host's link is cut under reads and keyed writes.
    let mut owner = partner(&balancer.url, "jauh").await;
    let id = owner.create_product("Es Campur", 0).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failed_reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (stop, failed, url) = (stop.clone(), failed_reads.clone(), balancer.url.clone());
        readers.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::SeqCst) {
                match http
                    .get(format!("{url}/ecanteen/product?limit=5"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for worker in 0..2 {
        let (mut owner, stop, id) = (owner.clone(), stop.clone(), id.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{worker}-{}", acknowledged.len());
                let uri = format!("/ecanteen/product/{id}/stock");
                // Sent again with the same key until it is acknowledged, as a till does.
                for attempt in 0.. {
                    assert!(attempt < 20, "{key} never acknowledged");
                    let request = requests::json(
                        "POST",
                        &uri,
                        &json!({"delta": 1}),
                        &[("idempotency-key", &key)],
                    );
                    if matches!(owner.try_send_built(request).await, Ok(r) if r.status == 200) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                acknowledged.push(key);
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    hosts.cut("app1");
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The cut took: the balancer sees app1 as not ready.
    let cut_off: std::net::SocketAddr = app1.parse().unwrap();
    balancer.wait_for(
        |s| Balancer::upstream(s, cut_off)["ready"] == false,
        Duration::from_secs(5),
    );
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let mut expectation = Expectation {
        product_id: id.parse().unwrap(),
        token: owner.api_token("ledger").await,
        ..Expectation::default()
    };
    for w in writers {
        for key in w.await.unwrap() {
            expectation.acknowledge(1, key);
        }
    }
    let acknowledged = expectation.acknowledged_keys.len();
    assert_eq!(
        failed_reads.load(Ordering::SeqCst),
        0,
        "reads failed while app1 was cut off"
    );
    assert!(acknowledged > 10, "the load ran: {acknowledged}");
    // The load tester's ledger check: each acknowledged key in the ledger exactly once,
    // and the ledger summing to the quantity.
    let report = invariant::check(&balancer.url, vec![expectation], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(report.holds(), "{}", report.summary());
    hosts.restore("app1");
    balancer.wait_ready(2);

    // The database host's link is cut: 503 with Retry-After within the bound, never a
    // hang, then service again once the link is back.
    hosts.cut("db");
    let http = client();
    let cut = Instant::now();
    let mut refused = 0;
    while cut.elapsed() < Duration::from_secs(8) {
        let sent = Instant::now();
        let r = http
            .get(format!("{}/ecanteen/product?limit=5", balancer.url))
            .send()
            .await
            .unwrap();
        let took = sent.elapsed();
        assert!(took < Duration::from_secs(8), "an answer took {took:?}");
        match r.status().as_u16() {
            200 => {}
            503 => {
                assert!(
                    r.headers().contains_key("retry-after"),
                    "a 503 without Retry-After"
                );
                refused += 1;
            }
            other => panic!(
                "{other} while the database was cut off: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    assert!(refused > 0, "no 503 while the database was cut off");
    eprintln!("hosts: {acknowledged} changes acknowledged across the cut; {refused} refusals while the database was away");
    hosts.restore("db");
    let back = Instant::now();
    loop {
        let r = http
            .get(format!("{}/ecanteen/product?limit=5", balancer.url))
            .send()
            .await;
        if matches!(r, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(45),
            "no recovery 45 s after the link came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "hosts: served again {:?} after the link came back",
        back.elapsed()
    );
    let r = owner.adjust(&id, 1).await;
    assert!(r.get("errors").is_none(), "a write after recovery: {r}");
    drop(db);
}
