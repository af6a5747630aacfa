//! Round robin and least connections, end to end.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let balancer = Balancer::start(&addrs, &["--algorithm", "round-robin"]);
    balancer.wait_ready(3);
    let c = client();
    let mut order = Vec::new();
    for _ in 0..300 {
        let body: Value = c
            .get(format!("{}/who", balancer.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        order.push(body["backend"].as_str().unwrap().to_owned());
    }
    for window in [3, 10, 50, 300] {
        for slice in order.windows(window).step_by(5) {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for name in slice {
                *counts.entry(name).or_default() += 1;
            }
            let max = counts.values().max().copied().unwrap_or(0);
            let min = if counts.len() < 3 {
                0
            } else {
                counts.values().min().copied().unwrap_or(0)
            };
            assert!(max - min <= 1, "window of {window}: {counts:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_keeps_new_requests_off_a_slow_replica() {
    let slow = Backend::start("slow").await;
    let fast = [Backend::start("f1").await, Backend::start("f2").await];
    slow.delay_ms
        .store(1500, std::sync::atomic::Ordering::SeqCst);
    let balancer = Balancer::start(
        &[slow.addr, fast[0].addr, fast[1].addr],
        &["--algorithm", "least-connections"],
    );
    balancer.wait_ready(3);
    let c = client();
    // Requests arrive one after another while the slow replica still holds the first.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let c = c.clone();
        let url = format!("{}/who", balancer.url);
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.map(|r| r.status().as_u16())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    let slow_hits = slow.hits();
    assert!(slow_hits <= 2, "the slow replica got {slow_hits} of 30");
    assert_eq!(slow_hits + fast[0].hits() + fast[1].hits(), 30);
    let spread = fast[0].hits().abs_diff(fast[1].hits());
    assert!(
        spread <= 2,
        "equals take turns: {} vs {}",
        fast[0].hits(),
        fast[1].hits()
    );
}
