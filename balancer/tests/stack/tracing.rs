//! One request followed across the balancer and a replica: the W3C trace id in both
//! processes' logs, and the replica's spans (the request's, a child of the balancer's,
//! and its SQL statements') sent to an OTLP collector.

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::harness::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn log_file(dir: &tempfile::TempDir, name: &str) -> (File, File) {
    let file = File::create(dir.path().join(name)).unwrap();
    (file.try_clone().unwrap(), file)
}

fn read(dir: &tempfile::TempDir, name: &str) -> String {
    std::fs::read_to_string(dir.path().join(name)).unwrap()
}

/// A replica logging at `info` to `replica.log` in `dir`, with `extra` flags.
fn replica(dir: &tempfile::TempDir, db: &Database, extra: &[&str]) -> (SocketAddr, Proc) {
    let (out, err) = log_file(dir, "replica.log");
    let (child, line) = spawn_listening(
        Command::new(api_bin())
            .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::from(err)),
        Some(out),
    );
    (listening_addr(&line, "http://"), Proc { child })
}

/// The `trace_id=` of the first line of `log` that holds `needle`.
fn trace_id_of_line_with(log: &str, needle: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let at = line.find("trace_id=")? + "trace_id=".len();
    Some(
        line[at..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requests_trace_id_is_in_the_balancers_and_the_replicas_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::new();
    let (addr, _replica) = replica(&dir, &db, &[]);
    let (out, err) = log_file(&dir, "balancer.log");
    let args = ["--upstream".to_owned(), addr.to_string()];
    let balancer = Balancer::start_logging(&args, "info", Some(out), Stdio::from(err));
    balancer.wait_ready(1);
    let http = client();
    let url = format!("{}/graphql?query=%7B__typename%7D", balancer.url);

    // A client's trace, continued.
    let continued = http
        .get(&url)
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .header("x-request-id", "traced-1")
        .send()
        .await
        .unwrap();
    assert_eq!(continued.status(), 200);
    // No trace: the balancer starts one.
    let started = http
        .get(&url)
        .header("x-request-id", "traced-2")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (front, back) = (read(&dir, "balancer.log"), read(&dir, "replica.log"));
        let front_ids = (
            trace_id_of_line_with(&front, "request_id=traced-1"),
            trace_id_of_line_with(&front, "request_id=traced-2"),
        );
        let back_ids = (
            trace_id_of_line_with(&back, "\"traced-1\""),
            trace_id_of_line_with(&back, "\"traced-2\""),
        );
        if let ((Some(f1), Some(f2)), (Some(b1), Some(b2))) = (&front_ids, &back_ids) {
            assert_eq!(
                f1, TRACE_ID,
                "the balancer continues the client's trace:\n{front}"
            );
            assert_eq!(
                b1, TRACE_ID,
                "the replica's lines name the same trace:\n{back}"
            );
            assert_eq!(f2.len(), 32, "{front}");
            assert_ne!(f2, TRACE_ID);
            assert_eq!(
                b2, f2,
                "the trace the balancer started reaches the replica:\n{back}"
            );
            // The balancer's line is its access line.
            assert!(
                front
                    .lines()
                    .any(|l| l.contains("access") && l.contains(f2.as_str())),
                "{front}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no trace ids in the logs: balancer {front_ids:?}, replica {back_ids:?}\n{front}\n{back}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stand-in OTLP/HTTP collector: keeps each export it is sent.
async fn collector() -> (String, Arc<Mutex<Vec<ExportTraceServiceRequest>>>) {
    let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                    kept.lock().unwrap().push(export);
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_otlp_endpoint_one_request_is_one_trace_from_the_balancer_down_to_the_sql() {
    let (collector_url, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::new();
    let (addr, _replica) = replica(&dir, &db, &["--otlp-endpoint", &collector_url]);
    let balancer = Balancer::start(&[addr], &["--otlp-endpoint", &collector_url]);
    balancer.wait_ready(1);
    let http = client();
    let response = http
        .get(format!(
            "{}/graphql?query=%7Bproducts(first:1)%7Bnodes%7Bid%7D%7D%7D",
            balancer.url
        ))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The SDK's batch exporter sends every few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<_> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|e| e.resource_spans.iter())
            .flat_map(|r| r.scope_spans.iter())
            .flat_map(|s| s.spans.iter())
            .filter(|s| hex(&s.trace_id) == TRACE_ID)
            .cloned()
            .collect();
        let hop = spans.iter().find(|s| s.name == "GET");
        let request = spans.iter().find(|s| s.name == "request");
        let sql = spans.iter().find(|s| s.name == "sql");
        if let (Some(hop), Some(request), Some(sql)) = (hop, request, sql) {
            // The client's span, then the balancer's hop, then the replica's request.
            assert_eq!(hex(&hop.parent_span_id), CLIENT_SPAN);
            assert_eq!(hex(&request.parent_span_id), hex(&hop.span_id));
            // The SQL ran inside the request.
            assert!(sql.start_time_unix_nano >= request.start_time_unix_nano);
            let statement = sql
                .attributes
                .iter()
                .find(|a| a.key == "db.statement")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            assert!(statement.contains("products"), "{statement}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hop, request and sql spans of the trace at the collector: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
