//! The HTTP/1 wire on the balancer's own request path (issue #20): what pingora-proxy
//! used to do for it and the path now does itself.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::*;

/// Reads from `stream` until `needle` has been seen (or 5 s pass); returns all read.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_sent_after_100_continue_reaches_the_replica_whole() {
    let backend = Backend::start("body").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let addr = balancer.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /body HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // The client waits for the go-ahead before it sends the body, as curl does.
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue"),
        "no 100 Continue: {interim:?}"
    );
    stream
        .write_all(b"5\r\nhello\r\n7\r\n, stall\r\n0\r\n\r\n")
        .await
        .unwrap();
    let response = read_until(&mut stream, "}").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body: Value = serde_json::from_str(
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default(),
    )
    .unwrap();
    assert_eq!(body["body"], "hello, stall");
    // A JSON body is read whole before a replica is leased, and goes on with its length.
    assert_eq!(body["content-length"], "12");
    assert_eq!(body["transfer-encoding"], Value::Null);
    assert_eq!(
        body["expect"],
        Value::Null,
        "the balancer answered Expect itself"
    );
}

/// Sends `GET path` on `stream` (kept alive) and reads its answer whole: the body.
async fn get_kept_alive(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: stall\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a length");
            if seen.len() >= end + 4 + length {
                return String::from_utf8_lossy(&seen[end + 4..end + 4 + length]).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the balancer closed the connection");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_replica_are_pooled_and_reused() {
    let backend = Backend::start("pool").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    // One client connection, written by hand: an HTTP client library may open a second
    // one when its next request starts before the first connection is back in its
    // pool, and that one may land on another worker thread (CI saw two peers so).
    let mut stream = TcpStream::connect(balancer.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let mut peers = HashSet::new();
    for _ in 0..30 {
        peers.insert(get_kept_alive(&mut stream, "/peer").await);
    }
    // Sequential requests on one client connection: one kept connection serves them
    // all (the health probes use connections of their own).
    assert_eq!(
        peers.len(),
        1,
        "{} connections for 30 requests",
        peers.len()
    );
}

/// Under concurrent load, a connection to the replica is opened only when every kept one
/// is busy: never more than there are requests at once. (pingora-core's own pool lost
/// a share of its reuses to a race under this load and opened new connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_open_no_more_connections_than_requests_at_once() {
    const CLIENTS: usize = 8;
    let backend = Backend::start("pool").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = format!("{}/peer", balancer.url);
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut peers = HashSet::new();
            for _ in 0..50 {
                let response = c.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                peers.insert(response.text().await.unwrap());
            }
            peers
        }));
    }
    let mut peers = HashSet::new();
    for task in tasks {
        peers.extend(task.await.unwrap());
    }
    assert!(
        peers.len() <= CLIENTS,
        "{} connections for {CLIENTS} clients' 400 requests",
        peers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_while_the_replica_works_hangs_up_on_the_replica_too() {
    let backend = Backend::start("watch").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let addr = balancer.url.trim_start_matches("http://").to_owned();

    // Control: a client that waits gets the answer, and nothing is abandoned.
    backend
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let response = client()
        .get(format!("{}/watch", balancer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "answered");
    assert_eq!(
        backend.abandoned.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    backend
        .delay_ms
        .store(3000, std::sync::atomic::Ordering::SeqCst);
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /watch HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while backend.abandoned.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica still works for a client that left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the lease ended with it.
    balancer.wait_for(
        |s| Balancer::upstream(s, backend.addr)["in_flight"] == 0,
        Duration::from_secs(2),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let backend = Backend::start("drain").await;
    let mut balancer = Balancer::start(&[backend.addr], &["--grace-secs", "3"]);
    balancer.wait_ready(1);
    backend
        .delay_ms
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let url = format!("{}/watch", balancer.url);
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    balancer.proc.term();
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "answered");
    assert!(
        balancer.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "the balancer did not exit after its grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_a_json_400_and_never_reaches_a_replica() {
    let backend = Backend::start("strict").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let addr = balancer.url.trim_start_matches("http://").to_owned();
    for request in [
        // A header line without a colon.
        &b"GET /who HTTP/1.1\r\nHost: shop\r\nNo colon here\r\n\r\n"[..],
        // Two lengths that disagree: the framing is ambiguous.
        b"POST /who HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        // A `Connection` header naming a field that is no token.
        b"GET /who HTTP/1.1\r\nHost: shop\r\nConnection: bad token\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let response = read_until(&mut stream, "}").await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{:?} got {response:?}",
            String::from_utf8_lossy(request)
        );
        assert!(response.contains("BAD_USER_INPUT"), "{response}");
    }
    assert_eq!(backend.hits(), 0);
}
