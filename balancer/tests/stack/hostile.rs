//! Hostile clients at the balancer (issue #33): each attack that needs no account, one
//! test each, with the honest client on another loopback address where the defence is
//! keyed on the address. The replicas here are in-test backends, which count what
//! reaches them; the attack suite against the real stack is `tests/abuse/`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::*;

/// The attacker's own loopback address.
const ATTACKER: &str = "127.0.0.2";

/// A connection to the balancer from `from`.
async fn connect_from(from: &str, balancer: &Balancer) -> TcpStream {
    let to: SocketAddr = balancer.url.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Everything the balancer sends until it closes the connection (or `within` passes:
/// then `None`).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Sends `request` from `from` on a connection of its own and returns everything the
/// balancer sends until it closes the connection (within 5 s, or the test fails).
async fn ask_from(from: &str, balancer: &Balancer, request: &[u8]) -> String {
    let mut stream = connect_from(from, balancer).await;
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered and closed")
}

/// The JSON body of a whole answer.
fn json_body(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn errors_of(status: &Value) -> u64 {
    status["upstreams"][0]["errors"].as_u64().unwrap_or(0)
}

/// Sends 1.25 MiB of chunked body (past the JSON bound) on a request whose header is
/// sent, and expects the balancer's 413 before the close.
async fn sends_a_chunked_body_past_the_bound_and_gets_413(stream: &mut TcpStream) {
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..20 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let answer = read_to_close(stream, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// Bodies over the route's bound are refused by the balancer itself, in the route's
/// envelope, whether declared or counted as they come, and the replica never sees them
/// nor pays for them: a burst of them leaves it ready and with no error against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_at_the_door_in_the_routes_envelope() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    for _ in 0..10 {
        for (path, rest) in [("/graphql", false), ("/ecanteen/product", true)] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                2 * 1024 * 1024
            );
            let answer = ask_from(ATTACKER, &balancer, head.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
            let body = json_body(&answer);
            if rest {
                assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE", "{answer}");
            } else {
                assert_eq!(
                    body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
                    "{answer}"
                );
            }
        }
    }
    // Chunked, with no length declared: counted as it comes.
    let mut stream = connect_from(ATTACKER, &balancer).await;
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    sends_a_chunked_body_past_the_bound_and_gets_413(&mut stream).await;
    assert_eq!(backend.hits(), 0, "no oversized body reached the replica");
    let status = balancer.status().unwrap();
    assert_eq!(status["ready"], 1, "{status}");
    assert_eq!(errors_of(&status), 0, "{status}");
}

/// A body that never finishes (with or without `Upgrade: websocket`) holds no lease on
/// a replica while it dawdles, and is answered 408 at its deadline; the replica never
/// sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_body_holds_no_lease_and_ends_at_its_deadline() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &["--client-body-timeout-secs", "1"]);
    balancer.wait_ready(1);
    for upgrade in ["", "Connection: Upgrade\r\nUpgrade: websocket\r\n"] {
        let mut stream = connect_from(ATTACKER, &balancer).await;
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
             {upgrade}Content-Length: 100\r\n\r\n{{\"query\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let status = balancer.status().unwrap();
        assert_eq!(
            status["upstreams"][0]["in_flight"], 0,
            "{upgrade:?}: {status}"
        );
        let started = Instant::now();
        let answer = read_to_close(&mut stream, Duration::from_secs(5))
            .await
            .expect("closed at the deadline");
        assert!(answer.starts_with("HTTP/1.1 408"), "{upgrade:?}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(3), "{upgrade:?}");
    }
    assert_eq!(backend.hits(), 0);
    assert_eq!(errors_of(&balancer.status().unwrap()), 0);
}

/// A header sent a byte at a time is cut at the whole-header deadline, not kept alive
/// by each byte; a kept-alive connection that sends nothing more is closed at the
/// keep-alive deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keepalives_are_closed_at_their_deadlines() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(
        &[backend.addr],
        &[
            "--client-header-timeout-secs",
            "1",
            "--keepalive-timeout-secs",
            "1",
        ],
    );
    balancer.wait_ready(1);
    let mut slow = connect_from(ATTACKER, &balancer).await;
    let started = Instant::now();
    slow.write_all(b"GET /who HTTP/1.1\r\n").await.unwrap();
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X-Slow: y\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled header kept its connection for 4 s");
    assert!(started.elapsed() < Duration::from_millis(2500));

    let mut idle = connect_from(ATTACKER, &balancer).await;
    idle.write_all(b"GET /who HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert!(
        rest.is_some(),
        "an idle kept-alive connection was never closed"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
    let metrics = raw::blocking_get(&format!("{}/metrics", balancer.admin)).unwrap();
    assert!(
        !metrics.contains("ecanteen_balancer_client_timeouts_total 0\n"),
        "{metrics}"
    );
}

/// Past the per-address cap, a connection is closed at once; another address is still
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_closed_and_others_still_served() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &["--max-connections-per-address", "4"]);
    balancer.wait_ready(1);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(ATTACKER, &balancer).await);
    }
    // The four are admitted (their accept has been seen) before the fifth comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = connect_from(ATTACKER, &balancer).await;
    let closed = read_to_close(&mut fifth, Duration::from_secs(2)).await;
    assert_eq!(
        closed.as_deref(),
        Some(""),
        "the fifth was closed, unanswered"
    );
    let honest = client()
        .get(format!("{}/who", balancer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(honest.status(), 200);
    let metrics = raw::blocking_get(&format!("{}/metrics", balancer.admin)).unwrap();
    assert!(
        metrics.contains("ecanteen_balancer_connections_refused_total 1\n"),
        "{metrics}"
    );
    drop(held);
}

/// The balancer's own refusals on `/ecanteen` are in the REST contract's envelope, with
/// `Retry-After` where they should be; elsewhere in GraphQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_rest_routes_are_in_the_rest_envelope() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &["--rate-limit-ip", "1"]);
    balancer.wait_ready(1);
    let http = client();
    for (path, rest) in [("/ecanteen/product", true), ("/graphql", false)] {
        let mut last = None;
        for _ in 0..3 {
            last = Some(
                http.post(format!("{}{path}", balancer.url))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        assert_eq!(last.status(), 429, "{path}");
        assert!(last.headers().contains_key("retry-after"));
        let body: Value = last.json().await.unwrap();
        if rest {
            assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS", "{body}");
        } else {
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS",
                "{body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // No replica ready: 503, in the REST envelope on REST.
    let nobody = Balancer::start(&[free_addr()], &[]);
    let answer = http
        .get(format!("{}/ecanteen/product", nobody.url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
}

/// A client's `X-Request-Id` that could forge a log field is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_that_could_forge_a_log_field_is_replaced() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let forged = "x status=200 user=admin";
    let answer = client()
        .get(format!("{}/who", balancer.url))
        .header("x-request-id", forged)
        .send()
        .await
        .unwrap();
    let id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, forged);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], id.as_str(), "{body}");
    let kept = client()
        .get(format!("{}/who", balancer.url))
        .header("x-request-id", "till-7:order-42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "till-7:order-42");
}

/// Behind a trusted proxy, each client behind it has its own per-address budget (from
/// `X-Forwarded-For`, right to left past trusted hops); from anyone else the header
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget() {
    let backend = Backend::start("one").await;
    let trusting = Balancer::start(
        &[backend.addr],
        &["--rate-limit-ip", "1", "--trusted-proxies", "127.0.0.1/32"],
    );
    let doubting = Balancer::start(&[backend.addr], &["--rate-limit-ip", "1"]);
    trusting.wait_ready(1);
    doubting.wait_ready(1);
    let http = client();
    let get = |url: String, xff: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("{url}/who"))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        get(trusting.url.clone(), "198.51.100.1").await.status(),
        200
    );
    // The client wrote the left one itself: only the right one, the proxy's, counts.
    let second = get(trusting.url.clone(), "6.6.6.6, 198.51.100.2").await;
    assert_eq!(second.status(), 200);
    let seen: Value = second.json().await.unwrap();
    assert_eq!(
        seen["headers"]["x-forwarded-for"], "6.6.6.6, 198.51.100.2, 127.0.0.1",
        "the hop is appended as it came: {seen}"
    );
    assert_eq!(
        get(trusting.url.clone(), "198.51.100.1").await.status(),
        429
    );
    // Not trusted: the header is the client's word, and changes nothing.
    assert_eq!(
        get(doubting.url.clone(), "198.51.100.3").await.status(),
        200
    );
    assert_eq!(
        get(doubting.url.clone(), "198.51.100.4").await.status(),
        429
    );
}

/// A replica that answers before it has read the whole body (a 405 or 413 for an
/// upload it will not take) has its answer relayed; it is not a failure, and nothing
/// is counted against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_is_relayed_not_a_502() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    // The in-test backend has no PUT here: it answers 405 without reading the body.
    let stream = connect_from("127.0.0.1", &balancer).await;
    let (mut read, mut write) = stream.into_split();
    let size = 5 * 1024 * 1024;
    let sender = tokio::spawn(async move {
        let head = format!(
            "PUT /ecanteen/product/1/image HTTP/1.1\r\nHost: shop\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {size}\r\n\r\n"
        );
        let _ = write.write_all(head.as_bytes()).await;
        let chunk = vec![b'p'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        write
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    drop(sender.await);
    let answer = String::from_utf8_lossy(&seen);
    assert!(
        answer.starts_with("HTTP/1.1 405"),
        "the replica's own answer: {answer}"
    );
    let status = balancer.status().unwrap();
    assert_eq!(errors_of(&status), 0, "{status}");
    assert_eq!(status["ready"], 1, "{status}");
}

/// WebSocket tunnels draw on a budget of their own, per client address: an address
/// past its share gets 503 at the upgrade, another address still gets its socket, and
/// the open tunnels hold none of the replica's request slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_past_the_per_address_budget_are_refused_and_others_still_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let db = Database::new();
    // One request in flight per address: tunnels are not requests in flight.
    let (_replicas, balancer) = stack(
        1,
        &db.url,
        &[],
        &[
            "--max-websockets-per-address",
            "2",
            "--max-in-flight-per-address",
            "1",
        ],
    );
    let ws_url = balancer.url.replace("http://", "ws://") + "/graphql/ws";
    let upgrade = |from: &'static str| {
        let ws_url = ws_url.clone();
        let balancer_url = balancer.url.clone();
        async move {
            let to: SocketAddr = balancer_url.trim_start_matches("http://").parse().unwrap();
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
            let stream = socket.connect(to).await.unwrap();
            let mut request = ws_url.into_client_request().unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            tokio_tungstenite::client_async(request, stream).await
        }
    };
    let first = upgrade(ATTACKER).await.expect("the first");
    let second = upgrade(ATTACKER).await.expect("the second");
    match upgrade(ATTACKER).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("a third from one address: {:?}", other.map(|_| ())),
    }
    // The attacker's two tunnels leave it its one request in flight.
    let answer = ask_from(
        ATTACKER,
        &balancer,
        b"GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let honest = upgrade("127.0.0.1").await.expect("another address");
    // Each lease ends as its 101 goes out (the client may read it a moment before).
    let status = balancer.wait_for(
        |s| s["upstreams"][0]["in_flight"] == 0,
        Duration::from_secs(2),
    );
    assert_eq!(status["websockets"]["open"], 3, "{status}");
    drop((first, second, honest));
}

/// A chunked body whose only chunk is the last (`0\r\n\r\n`), or that arrives with its
/// chunk framing split across reads, reaches the replica framed by its length, so no
/// stray end marker is left on a pooled connection for the next request to meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_reach_the_replica_framed_by_their_length() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let mut stream = connect_from("127.0.0.1", &balancer).await;
    for n in 0..5 {
        stream
            .write_all(
                b"POST /ecanteen/body HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        if n % 2 == 0 {
            stream.write_all(b"0\r\n\r\n").await.unwrap();
        } else {
            // "hello" in one chunk, its size line and its data in separate writes.
            for piece in [&b"5\r"[..], b"\n", b"hel", b"lo\r", b"\n0\r\n", b"\r\n"] {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains('}') {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("answered")
                .unwrap();
            assert!(read > 0, "request {n}: closed");
            seen.extend_from_slice(&buf[..read]);
        }
        let answer = String::from_utf8_lossy(&seen).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "request {n}: {answer}");
        let body = json_body(&answer);
        let expected = if n % 2 == 0 { "" } else { "hello" };
        assert_eq!(body["body"], expected, "request {n}: {answer}");
        assert_eq!(
            body["content-length"],
            expected.len().to_string(),
            "request {n}: {answer}"
        );
        assert!(body["transfer-encoding"].is_null(), "request {n}: {answer}");
    }
    assert_eq!(errors_of(&balancer.status().unwrap()), 0);
}

/// A client that sent `Expect: 100-continue` and was told to go on still gets the
/// balancer's refusal (here a 413 for a chunked body past the bound), not a silent
/// close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_100_continue_is_still_answered() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let mut stream = connect_from(ATTACKER, &balancer).await;
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"));
    sends_a_chunked_body_past_the_bound_and_gets_413(&mut stream).await;
}

/// One address may hold only its share of requests in flight (the writing of their
/// answers included): past it, 429 in the route's envelope; another address is not
/// held to it. (A slow reader of an answer of up to 1 MiB holds no lease at all: the
/// answer is read whole from the replica first. On loopback the kernel's socket buffers
/// take such an answer whole anyway, so that part has no test of its own here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_only_its_share_of_requests_in_flight() {
    let backend = Backend::start("one").await;
    let balancer = Balancer::start(&[backend.addr], &["--max-in-flight-per-address", "3"]);
    balancer.wait_ready(1);
    backend
        .delay_ms
        .store(2000, std::sync::atomic::Ordering::SeqCst);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from(ATTACKER, &balancer).await;
        stream
            .write_all(b"GET /who HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = ask_from(
        ATTACKER,
        &balancer,
        b"GET /ecanteen/product HTTP/1.1\r\nHost: shop\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert_eq!(
        json_body(&answer)["error"]["code"],
        "TOO_MANY_REQUESTS",
        "{answer}"
    );
    let honest = client()
        .get(format!("{}/who", balancer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(honest.status(), 200);
    drop(held);
}
