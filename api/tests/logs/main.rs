//! What a replica logs, read back from its own log.
//!
//! `tracing` caches, per call site and for the whole process, whether anyone listens;
//! a subscriber set for one test's thread misses call sites that another test's thread
//! met first. So this is a test binary of its own, with one test and a global
//! subscriber (as `cost` is).
// Panicking on a broken expectation is what a test is for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The replica tests' harness; this binary uses a part of it.
#[allow(dead_code, unused_macros, unused_imports)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex};

use serde_json::json;

use helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 503 is a designed answer (a refusal with `Retry-After`, readiness while shutting
/// down), not a fault: it is not logged at ERROR, or every overload would be an alarm,
/// and a readiness probe racing a replica's shutdown an error in its log (the stack test
/// that starts three replicas ten times found one in a CI run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_with_503_is_not_logged_as_an_error() {
    let log = Captured::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let app = TestApp::with_config(Engine::Sqlite, |c| {
        c.write_wait_ms = 100;
        c.db_timeout_secs = 5;
    })
    .await;
    let mut c = app.partner("tenang").await;
    let id = c.create_product("Lemper", 10).await;
    let gate = app.sqlite_write_gate();
    let turn = gate.enter().await.unwrap();
    let refused = c
        .rest(
            "POST",
            &format!("/ecanteen/product/{id}/stock"),
            Some(json!({"delta": -1})),
            &[],
        )
        .await;
    drop(turn);
    assert_eq!(refused.status, 503, "{}", refused.text());
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("request refused: unavailable"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}
