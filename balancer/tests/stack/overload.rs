//! The balancer past a replica's capacity: the excess is refused at once with 503 and
//! Retry-After, a slow but live replica is never answered with 502, and nothing the
//! balancer says is a 500.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_replicas_cap_and_a_short_queue_the_excess_gets_503_at_once() {
    let backend = Backend::start("slow").await;
    backend.delay_ms.store(3000, Ordering::SeqCst);
    let balancer = Balancer::start(
        &[backend.addr],
        &[
            "--max-in-flight",
            "2",
            "--queue-ms",
            "200",
            "--max-queued",
            "3",
        ],
    );
    balancer.wait_ready(1);
    let c = client();
    let started = Instant::now();
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let (c, url) = (c.clone(), format!("{}/who", balancer.url));
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key("retry-after");
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, retry_after, body, started.elapsed())
            })
        })
        .collect();
    let mut served = 0;
    for request in requests {
        let (status, retry_after, body, took) = request.await.unwrap();
        match status {
            200 => served += 1,
            503 => {
                assert!(retry_after, "{body}");
                assert_eq!(
                    body["errors"][0]["extensions"]["code"], "INTERNAL",
                    "{body}"
                );
                assert!(body.to_string().contains("at capacity"), "{body}");
                // Refused at once (after the 200 ms queue at most), not after the slow
                // replica's three seconds.
                assert!(took < Duration::from_secs(2), "refused after {took:?}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(served, 2, "the replica got exactly its cap");
    assert_eq!(backend.hits(), 2, "no refused request reached the replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_too_slow_to_answer_in_time_gives_503_with_retry_after_not_502() {
    let backend = Backend::start("sluggish").await;
    backend.delay_ms.store(2500, Ordering::SeqCst);
    let balancer = Balancer::start(&[backend.addr], &["--read-timeout-secs", "1"]);
    balancer.wait_ready(1);
    // A write is not retried after it was sent: its answer is the balancer's own.
    let r = client()
        .post(format!("{}/who", balancer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("slow to answer"), "{body}");
}

/// A write that reached a replica is sent again only where the replica honours its
/// `Idempotency-Key`: the REST writes that read it. `/graphql` ignores the header, so a
/// mutation sent with it was once applied a second time on the next replica; so do
/// login, logout and a password change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_rest_writes_with_an_idempotency_key_are_sent_again_after_a_failure() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    for backend in [&a, &b] {
        backend.delay_ms.store(2500, Ordering::SeqCst);
    }
    let balancer = Balancer::start(&[a.addr, b.addr], &["--read-timeout-secs", "1"]);
    balancer.wait_ready(2);
    let hits = || a.hits() + b.hits();
    let send = |path: &str| {
        client()
            .post(format!("{}{path}", balancer.url))
            .header("idempotency-key", format!("k-{path}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };

    let r = send("/graphql").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(hits(), 1, "a GraphQL mutation is never sent twice");

    let r = send("/ecanteen/product").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        hits(),
        3,
        "a keyed REST write is tried on the other replica"
    );

    for path in ["/ecanteen/login", "/ecanteen/logout"] {
        let before = hits();
        let r = send(path).await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(
            hits(),
            before + 1,
            "{path} ignores the key: never sent twice"
        );
    }
}
