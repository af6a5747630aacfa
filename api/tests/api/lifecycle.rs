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
