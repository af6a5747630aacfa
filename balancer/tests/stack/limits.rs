//! Rate limits: per client IP and per partner, 429 with `Retry-After`.

use std::time::{Duration, Instant};

use ecanteen_test_client::documents;
use serde_json::{json, Value};

use crate::harness::*;

/// Sends `n` requests one after another; returns the answers' statuses, the
/// `Retry-After` of each 429, and how long it took.
async fn burst(
    n: usize,
    mut send: impl FnMut(usize) -> reqwest::RequestBuilder,
) -> (Vec<u16>, Vec<u64>, Duration) {
    let started = Instant::now();
    let (mut statuses, mut waits) = (Vec::new(), Vec::new());
    for i in 0..n {
        let response = send(i).send().await.unwrap();
        assert!(
            response.headers().get("x-ecanteen-partner").is_none(),
            "the replica's partner note leaked to the client"
        );
        let status = response.status().as_u16();
        if status == 429 {
            let wait = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS");
            waits.push(wait);
        }
        statuses.push(status);
    }
    (statuses, waits, started.elapsed())
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_over_its_budget_gets_429_with_retry_after_then_passes_again() {
    let backend = Backend::start("limited").await;
    let balancer = Balancer::start(
        &[backend.addr],
        &["--rate-limit-ip", "5", "--rate-limit-partner", "0"],
    );
    balancer.wait_ready(1);
    let c = client();
    let url = format!("{}/who", balancer.url);

    let (statuses, waits, elapsed) = burst(20, |_| c.get(&url)).await;
    let refilled = (elapsed.as_secs_f64() * 5.0).ceil() as usize;
    let ok = count(&statuses, 200);
    assert!(
        (5..=5 + refilled).contains(&ok),
        "{ok} passed in {elapsed:?}: {statuses:?}"
    );
    assert_eq!(ok + count(&statuses, 429), 20, "{statuses:?}");
    assert!(waits.iter().all(|w| *w == 1), "{waits:?}");
    assert_eq!(
        backend.hits() as usize,
        ok,
        "a refused request reached a replica"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);

    let metrics = raw::blocking_get(&format!("{}/metrics", balancer.admin)).unwrap();
    let limited = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ecanteen_balancer_rate_limited_total "))
        .unwrap();
    assert_eq!(limited, (20 - ok).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_has_one_budget_over_its_sessions_tokens_and_every_replica() {
    let db = Database::new();
    let replicas = [Replica::start(&db.url, &[]), Replica::start(&db.url, &[])];
    let balancer = Balancer::start(
        &[replicas[0].addr, replicas[1].addr],
        &[
            "--algorithm",
            "round-robin",
            "--rate-limit-partner",
            "5",
            "--rate-limit-ip",
            "0",
        ],
    );
    balancer.wait_ready(2);
    let url = balancer.url.clone();
    let mut session = partner(&url, "limited").await;
    let token = session.api_token("till").await;
    let mut other = partner(&url, "unhurried").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Alternate the session and the token; round robin alternates the replicas.
    let http = client();
    let cookie = session.cookie.clone().unwrap();
    let me = serde_json::json!({ "query": "{ me { id } }" });
    let (statuses, waits, elapsed) = burst(20, |i| {
        let request = http.post(format!("{url}/graphql"));
        let request = if i % 2 == 0 {
            request.header("cookie", &cookie)
        } else {
            request.bearer_auth(&token)
        };
        request.json(&me)
    })
    .await;
    // Five from the partner's budget, one for the token before its first answer named
    // its partner, and what refilled meanwhile.
    let refilled = (elapsed.as_secs_f64() * 5.0).ceil() as usize;
    let ok = count(&statuses, 200);
    assert!(
        (5..=6 + refilled).contains(&ok),
        "{ok} passed in {elapsed:?}: {statuses:?}"
    );
    assert_eq!(ok + count(&statuses, 429), 20, "{statuses:?}");
    assert!(
        !waits.is_empty() && waits.iter().all(|w| *w == 1),
        "{waits:?}"
    );
    // Both credentials were refused in the end: one budget, not one each.
    assert_eq!(statuses[18..], [429, 429], "{statuses:?}");

    // Another partner is not slowed by the first.
    let r = other.gql(documents::ME, json!({})).await;
    assert_eq!(r["data"]["me"]["username"], "unhurried", "{r}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = session.gql(documents::ME, json!({})).await;
    assert_eq!(r["data"]["me"]["username"], "limited", "{r}");
}
