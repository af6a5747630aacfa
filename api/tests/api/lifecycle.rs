//! A real replica on a socket: start, readiness, and the SIGTERM drain sequence.

use std::net::SocketAddr;
use std::time::Duration;

use ecanteen_api::startup::Application;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A minimal HTTP/1.1 GET; returns the status code, or None when nothing listens.
async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_then_drains_then_exits() {
    let db = TestDb::new(Engine::Sqlite).await;
    let mut config = test_config(&db.url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.drain_delay_ms = 600;
    let app = Application::build(&config).await.unwrap();
    let addr = app.local_addr().unwrap();
    assert_ne!(addr.port(), 0, "port 0 is resolved to the bound port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    assert_eq!(status_of(addr, "/readyz").await, Some(200));
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Still serving during the drain delay, but no longer ready.
    assert_eq!(status_of(addr, "/readyz").await, Some(503));
    assert_eq!(status_of(addr, "/healthz").await, Some(200));

    let finished = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "the server exits cleanly"
    );
    assert_eq!(
        status_of(addr, "/healthz").await,
        None,
        "the listener is closed"
    );
}

/// A replica on a real socket, stopped when the returned sender is dropped or fired.
async fn serve(
    tweak: impl FnOnce(&mut ecanteen_api::config::Config),
) -> (SocketAddr, TestDb, tokio::sync::oneshot::Sender<()>) {
    let db = TestDb::new(Engine::Sqlite).await;
    let mut config = test_config(&db.url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    tweak(&mut config);
    let app = Application::build(&config).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (addr, db, stop)
}

/// Reads what the server sends until it closes the connection (or `within` passes).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut response = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_is_cut_off_at_the_header_deadline() {
    let (addr, _db, _stop) = serve(|c| c.header_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 200 ms: each read is quick, the header never ends.
    let trickle = async {
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let cut = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    assert!(cut.is_ok(), "the connection was still open after 5 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Well-behaved clients are served as before.
    assert_eq!(status_of(addr, "/healthz").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_it_is_sent() {
    let (addr, _db, _stop) = serve(|c| c.body_limit = 64 * 1024).await;

    // Declared too large: answered 413 from the header alone.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{\"query\":")
        .await
        .unwrap();
    let response = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .unwrap_or_default();
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");

    // Chunked with no length: refused once the limit is passed, not at the end of a
    // gigabyte.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
    let mut sent = 0usize;
    let (mut read_half, mut write_half) = stream.into_split();
    let writer = tokio::spawn(async move {
        while sent < 1 << 30 {
            if write_half.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 16 * 1024;
        }
        sent
    });
    let mut head = vec![0u8; 12];
    let answered =
        tokio::time::timeout(Duration::from_secs(5), read_half.read_exact(&mut head)).await;
    assert!(
        answered.is_ok(),
        "no answer while the body was still coming"
    );
    assert_eq!(&head, b"HTTP/1.1 413");
    drop(read_half);
    let sent = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sent < 64 << 20,
        "the server read {sent} bytes before refusing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_left_still_commits_before_shutdown_closes_the_pool() {
    let db = std::sync::Arc::new(TestDb::new(Engine::Sqlite).await);
    let setup = TestApp::on(db.clone(), |_| {}).await;
    let mut owner = setup.partner("pamit").await;
    let product = owner.create_product("Kopi", 0).await;
    let token = owner.api_token("till").await;

    let mut config = test_config(&db.url);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = Application::build(&config).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    // Another writer holds the writers' lock, so the write waits at the gate.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(db.url.trim_start_matches("sqlite://").to_owned() + "-writer.lock")
        .unwrap();
    lock.lock().unwrap();
    let body = serde_json::json!({
        "query": "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { replayed } }",
        "variables": { "i": { "productId": product, "delta": 1, "reason": "RESTOCK" } },
    })
    .to_string();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client goes away, and the replica is told to stop, while the write waits.
    drop(client);
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.unlock().unwrap();

    let finished = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "the server exits cleanly"
    );
    assert_eq!(
        owner.quantity(&product).await,
        1,
        "the write committed before the pool closed"
    );
}
