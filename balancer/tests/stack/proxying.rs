//! What the proxy adds, limits and answers by itself.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_request_ids_kept() {
    let backend = Backend::start("echo").await;
    let balancer = Balancer::start(&[backend.addr], &[]);
    balancer.wait_ready(1);
    let c = client();
    let response = c.get(format!("{}/who", balancer.url)).send().await.unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");
    assert_eq!(body["headers"]["x-request-id"], made.as_str());

    let response = c
        .get(format!("{}/who", balancer.url))
        .header("x-request-id", "trace-42")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-request-id"], "trace-42");
    assert_eq!(body["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let backend = Backend::start("small").await;
    let balancer = Balancer::start(&[backend.addr], &["--body-limit", "1024"]);
    balancer.wait_ready(1);
    let c = client();
    let response = c
        .post(format!("{}/who", balancer.url))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(backend.hits(), 0, "never reached the replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_ready_is_a_json_503_with_retry_after() {
    let nobody = free_addr();
    let balancer = Balancer::start(&[nobody], &[]);
    let c = client();
    let response = c
        .get(format!("{}/graphql", balancer.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no replica"));
    let status = balancer.status().unwrap();
    assert_eq!(status["ready"], 0);
    assert_ne!(Balancer::upstream(&status, nobody)["health"], "healthy");
    // The balancer itself stays up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(balancer.status().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_describe_every_replica() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let balancer = Balancer::start(&[a.addr, b.addr], &[]);
    balancer.wait_ready(2);
    let c = client();
    for _ in 0..10 {
        c.get(format!("{}/who", balancer.url)).send().await.unwrap();
    }
    let status = balancer.wait_for(
        |s| s["totals"]["requests"].as_u64() == Some(10),
        Duration::from_secs(5),
    );
    assert_eq!(status["algorithm"], "least-connections");
    for addr in [a.addr, b.addr] {
        let u = Balancer::upstream(&status, addr);
        assert_eq!(u["health"], "healthy");
        assert_eq!(u["in_flight"], 0);
    }
    let metrics = c
        .get(format!("{}/metrics", balancer.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "ecanteen_balancer_requests_total 10",
        &format!(
            "ecanteen_balancer_upstream_healthy{{upstream=\"{}\"}} 1",
            a.addr
        ),
        "ecanteen_balancer_upstream_in_flight",
        "ecanteen_balancer_retries_total",
        "ecanteen_balancer_request_duration_seconds_bucket{le=\"+Inf\"} 10",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}
