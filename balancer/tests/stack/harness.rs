//! Processes and backends for the tests.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use ecanteen_test_client::Remote;
use serde_json::{json, Value};

/// An address nothing listens on, for tests of a refused connection. Not for a server to
/// bind: another process may take the port once it is let go. Servers are started on
/// port 0 and say where they listen ([`spawn_listening`]).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `command` with its standard output piped, and returns it with the first line
/// that says where it listens (both binaries print one once their ports are bound). A
/// thread copies every line to `sink`, when given, until the process closes its output.
pub fn spawn_listening(command: &mut Command, sink: Option<std::fs::File>) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the process");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut sink = sink;
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(" listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line.clone());
                }
            }
            if let Some(sink) = sink.as_mut() {
                let _ = writeln!(sink, "{line}");
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => (child, line),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("{command:?} did not say where it listens ({status:?})")
        }
    }
}

/// The address after the first `http://` of a listening line.
pub fn listening_addr(line: &str, after: &str) -> SocketAddr {
    let rest = line
        .split_once(after)
        .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
        .1;
    let addr = rest.split([' ', ')']).next().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
}

pub fn balancer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ecanteen-balancer"))
}

/// The replica binary, built next to the balancer by `cargo test --workspace`; built
/// here when the balancer's tests run alone.
pub fn api_bin() -> PathBuf {
    let bin = balancer_bin().with_file_name("ecanteen-api");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "ecanteen-api", "--bin", "ecanteen-api"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "could not build ecanteen-api");
    }
    bin
}

/// A child process killed when the test ends, however it ends.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to drain.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: drain, then exit.
    pub fn term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real replica on `database_url`.
pub struct Replica {
    pub addr: SocketAddr,
    pub proc: Proc,
}

impl Replica {
    /// A replica on a port of its own choosing (port 0).
    pub fn start(database_url: &str, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), database_url, extra)
    }

    /// A replica on `addr` (a test that restarts one on the port it had).
    pub fn start_on(addr: SocketAddr, database_url: &str, extra: &[&str]) -> Self {
        let (child, line) = spawn_listening(
            Command::new(api_bin())
                .args([
                    "--listen",
                    &addr.to_string(),
                    "--database-url",
                    database_url,
                ])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
            None,
        );
        Self {
            addr: listening_addr(&line, "http://"),
            proc: Proc { child },
        }
    }
}

/// `n` real replicas on `database_url` (each started with `extra`) behind a balancer
/// (started with `balancer_extra`), once every replica is ready.
pub fn stack(
    n: usize,
    database_url: &str,
    extra: &[&str],
    balancer_extra: &[&str],
) -> (Vec<Replica>, Balancer) {
    let replicas: Vec<Replica> = (0..n)
        .map(|_| Replica::start(database_url, extra))
        .collect();
    let addrs: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    let balancer = Balancer::start(&addrs, balancer_extra);
    balancer.wait_ready(n as u64);
    (replicas, balancer)
}

/// A shared SQLite database for real replicas.
pub struct Database {
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Database {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite://{}", dir.path().join("stack.db").display()),
            _dir: dir,
        }
    }
}

/// A running balancer.
pub struct Balancer {
    pub url: String,
    pub admin: String,
    pub proc: Proc,
}

impl Balancer {
    pub fn start(upstreams: &[SocketAddr], extra: &[&str]) -> Self {
        let mut args: Vec<String> = Vec::new();
        for u in upstreams {
            args.push("--upstream".into());
            args.push(u.to_string());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::start_with(&args)
    }

    pub fn start_with(args: &[String]) -> Self {
        let stderr = if std::env::var_os("ECANTEEN_TEST_SHOW_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::start_logging(args, "warn", None, stderr)
    }

    /// Starts a balancer on ports of its own choosing, whose logs (at `level`) go to
    /// `stdout` (when given) and `stderr`.
    pub fn start_logging(
        args: &[String],
        level: &str,
        stdout: Option<std::fs::File>,
        stderr: Stdio,
    ) -> Self {
        let (child, line) = spawn_listening(
            Command::new(balancer_bin())
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .args(["--health-interval-ms", "200", "--threads", "2"])
                // The tests' loads all come from 127.0.0.1; the limits have their own tests.
                .args(if args.iter().any(|a| a.starts_with("--rate-limit")) {
                    &[][..]
                } else {
                    &["--rate-limit-ip", "0", "--rate-limit-partner", "0"][..]
                })
                .args(args)
                .env("RUST_LOG", level)
                .stderr(stderr),
            stdout,
        );
        let listen = listening_addr(&line, "http://");
        let admin = listening_addr(&line, "admin http://");
        let balancer = Self {
            url: format!("http://{listen}"),
            admin: format!("http://{admin}"),
            proc: Proc { child },
        };
        balancer.wait_for(|_| true, Duration::from_secs(10));
        // The proxy's own listener is bound by its service, a moment after the admin's.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(Instant::now() < deadline, "nothing listens at {listen}");
            std::thread::sleep(Duration::from_millis(20));
        }
        balancer
    }

    /// The admin status document.
    pub fn status(&self) -> Option<Value> {
        let body = raw::blocking_get(&format!("{}/status", self.admin))?;
        serde_json::from_str(&body).ok()
    }

    /// Waits until `check(status)` holds.
    pub fn wait_for(&self, check: impl Fn(&Value) -> bool, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.status() {
                if check(&status) {
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached; status: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ready(&self, n: u64) -> Value {
        self.wait_for(|s| s["ready"].as_u64() == Some(n), Duration::from_secs(10))
    }

    pub fn upstream(status: &Value, addr: SocketAddr) -> &Value {
        status["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["addr"] == addr.to_string())
            .unwrap_or(&Value::Null)
    }
}

/// A tiny blocking GET for the harness itself (no runtime needed).
pub mod raw {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::time::Duration;

    /// The status of a GET, or `None` when nothing answered.
    pub fn status(url: &str) -> Option<u16> {
        let (head, _) = get(url)?;
        head.split(' ').nth(1)?.parse().ok()
    }

    pub fn blocking_get(url: &str) -> Option<String> {
        let (head, body) = get(url)?;
        head.starts_with("HTTP/1.1 200").then_some(body)
    }

    fn get(url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut stream = TcpStream::connect(host).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        Some((head.to_owned(), body.to_owned()))
    }
}

/// An in-test HTTP backend that names itself, echoes the headers it got, and can be
/// made slow.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub delay_ms: Arc<AtomicU64>,
    /// `/watch` requests whose handler was dropped before it answered: the
    /// connection they came on closed while they waited.
    pub abandoned: Arc<AtomicU64>,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    hits: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    abandoned: Arc<AtomicU64>,
}

/// Counts a `/watch` request as abandoned unless it answered.
struct Watch {
    abandoned: Arc<AtomicU64>,
    answered: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.answered {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Waits `delay_ms` (2 s when unset) and answers, unless its connection goes first.
async fn watch(State(state): State<BackendState>) -> &'static str {
    let mut guard = Watch {
        abandoned: state.abandoned.clone(),
        answered: false,
    };
    let delay = match state.delay_ms.load(Ordering::SeqCst) {
        0 => 2000,
        ms => ms,
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    guard.answered = true;
    "answered"
}

/// The body it got, as it got it, and how it was framed.
async fn echo_body(headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    axum::Json(json!({
        "body": String::from_utf8_lossy(&body),
        "content-length": header("content-length"),
        "transfer-encoding": header("transfer-encoding"),
        "expect": header("expect"),
    }))
}

/// The address of the connection the request came on.
async fn peer(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

async fn whoami(State(state): State<BackendState>, headers: HeaderMap) -> axum::Json<Value> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    axum::Json(json!({ "backend": state.name, "headers": headers }))
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let abandoned = Arc::new(AtomicU64::new(0));
        let state = BackendState {
            name: name.to_owned(),
            hits: hits.clone(),
            delay_ms: delay_ms.clone(),
            abandoned: abandoned.clone(),
        };
        let app = Router::new()
            .route("/readyz", get(|| async { "ok" }))
            .route("/who", get(whoami).post(whoami))
            .route("/graphql", post(whoami))
            .route("/ecanteen/body", post(echo_body))
            .route("/ecanteen/product/{id}/stock", post(echo_body))
            .route("/ecanteen/{*rest}", get(whoami).post(whoami))
            .route("/watch", get(watch))
            .route("/body", post(echo_body))
            .route("/peer", get(peer))
            .with_state(state);
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            hits,
            delay_ms,
            abandoned,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A replica that passes its health checks and fails every other request the way a
/// replica killed mid-request does: it reads the request's header, then resets the
/// connection without reading the body.
pub struct Dropper {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
}

impl Dropper {
    pub async fn start() -> Self {
        Self::serve(0, true).await
    }

    /// A replica that answers the first `first` requests on each connection (200, `ok`,
    /// kept alive), then reads the next one whole and closes the connection without a
    /// byte of answer, as a replica killed while it works on a request does.
    pub async fn dying_after(first: u64) -> Self {
        Self::serve(first, false).await
    }

    async fn serve(first: u64, reset: bool) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let (counted, answers) = (requests.clone(), answered.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (requests, answered) = (counted.clone(), answers.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut left = first;
                    loop {
                        let end = loop {
                            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            match stream.read(&mut buf).await {
                                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                                _ => return,
                            }
                        };
                        let failing = !seen.starts_with(b"GET /readyz ") && left == 0;
                        if failing && reset {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let _ = stream.set_zero_linger();
                            return;
                        }
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while seen.len() < end + length {
                            match stream.read(&mut buf).await {
                                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                                _ => return,
                            }
                        }
                        seen.drain(..end + length);
                        if failing {
                            // Read whole, then gone: the kernel's FIN acknowledges it.
                            requests.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        if !head.starts_with("get /readyz ") {
                            left -= 1;
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            answered,
        }
    }

    /// Requests it took and failed.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests it answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A partner's client of the stack (the one test client, over the network).
pub type Partner = ecanteen_test_client::Client<Remote>;

/// A client through `url` with no credential yet.
pub fn anonymous(url: &str) -> Partner {
    Partner::new(Remote::new(url))
}

/// Registers and logs in a partner through `url`, returning a client that keeps the
/// session cookie.
pub async fn partner(url: &str, username: &str) -> Partner {
    let mut c = anonymous(url);
    c.sign_in(username).await;
    c
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, on a free
/// port), so a test may stop and restart it without disturbing anything else.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The newest PostgreSQL server's binaries (`initdb`, `pg_ctl`).
pub fn postgres_bin_dir() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (scripts/install-deps.sh installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .max()
        .expect("initdb under /usr/lib/postgresql/*/bin")
}

/// `initdb`'s arguments for a test cluster, before its data directory: trust, user
/// postgres, UTF-8, no fsync.
pub const INITDB_ARGS: [&str; 8] = [
    "-A",
    "trust",
    "-U",
    "postgres",
    "-E",
    "UTF8",
    "--no-sync",
    "-D",
];

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("ecanteen-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let pg = Self {
            port: free_addr().port(),
            dir,
            bin,
        };
        if is_root() {
            // PostgreSQL refuses to run as root.
            run(Command::new("chown").arg("postgres:").arg(pg.dir.path()));
        }
        run(pg
            .as_owner("initdb")
            .args(INITDB_ARGS)
            .arg(pg.dir.path().join("data")));
        pg.start_again();
        pg
    }

    fn as_owner(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.as_owner("pg_ctl");
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(args);
        command
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(&mut self.pg_ctl(&["-w", "-o", &options, "start"]));
    }

    /// A clean, fast shutdown: connections are cut, committed data is kept.
    pub fn stop(&self) {
        run(&mut self.pg_ctl(&["-w", "-m", "fast", "stop"]));
    }

    pub fn create_database(&self, name: &str) -> String {
        run(Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-p"])
            .arg(self.port.to_string())
            .args(["-c", &format!("create database {name}")]));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

pub fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A TCP relay to `127.0.0.1:target` whose network can go silent: while cut, nothing is
/// refused and nothing answers (bytes wait, new connections wait), as when a database
/// host hangs or a link drops packets. Restored, everything flows again.
pub struct Cut {
    pub port: u16,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl Cut {
    pub async fn start(target: u16) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let silent = flag.clone();
                tokio::spawn(async move {
                    while silent.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::spawn(pump(in_read, out_write, silent.clone()));
                    tokio::spawn(pump(out_read, in_write, silent));
                });
            }
        });
        Self { port, silent }
    }

    pub fn cut(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.silent.store(false, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        // Bytes read just as the cut began wait for the restore.
        while silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The load test's ledger check on one product, through `url` with its owner's
/// `token`: every acknowledged key is in the ledger exactly once, the ledger sums to the
/// product's quantity, and an unacknowledged key that landed is a violation (so send
/// failed changes again with their keys first).
pub async fn assert_ledger(
    url: &str,
    token: &str,
    product_id: i64,
    acknowledged: Vec<String>,
    unacknowledged: Vec<String>,
) {
    let expectation = ecanteen_loadtest::invariant::Expectation {
        product_id,
        token: token.to_owned(),
        initial: 0,
        acknowledged_sum: i64::try_from(acknowledged.len()).unwrap(),
        acknowledged_keys: acknowledged,
        unacknowledged_keys: unacknowledged,
        ..Default::default()
    };
    let report =
        ecanteen_loadtest::invariant::check(url, vec![expectation], Duration::from_secs(10))
            .await
            .unwrap();
    assert!(report.holds(), "{}", report.summary());
}
