//! The check that ends every run: nothing the stack acknowledged was lost or applied
//! twice. For every product the run touched, the ledger (read over GraphQL with the
//! owner's API token, deleted products included) must sum to the initial quantity plus
//! the acknowledged deltas, hold each acknowledged idempotency key exactly once, and end
//! at the product's current quantity.

use std::sync::Arc;
use std::time::Duration;

use ecanteen_test_client::{requests, Client, Remote};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::int;

/// How many products are checked at once.
const PARALLEL: usize = 8;

/// What a run knows about one product it created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectation {
    pub product_id: i64,
    /// The owner's API token.
    pub token: String,
    /// The quantity the product was created with (the ledger's first row).
    pub initial: i64,
    /// The sum of every stock change the stack answered with success.
    pub acknowledged_sum: i64,
    pub acknowledged_keys: Vec<String>,
    /// Stock changes that failed: their outcome is unknown to the client.
    pub unacknowledged_keys: Vec<String>,
    /// The stack acknowledged the product's deletion.
    pub deleted: bool,
    /// A delete was sent but not acknowledged.
    pub delete_unconfirmed: bool,
}

impl Expectation {
    pub fn acknowledge(&mut self, delta: i64, key: String) {
        self.acknowledged_sum += delta;
        self.acknowledged_keys.push(key);
    }

    pub fn expected_quantity(&self) -> i64 {
        self.initial + self.acknowledged_sum
    }
}

/// The outcome of the check.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct InvariantReport {
    pub products_checked: usize,
    pub movements_read: usize,
    pub acknowledged_changes: usize,
    /// One line per difference found; empty when the invariant holds.
    pub violations: Vec<String>,
}

impl InvariantReport {
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    /// The verdict and its counts, then one indented line per violation.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "Invariant: {} products, {} acknowledged stock changes, {} ledger rows read: {}\n",
            self.products_checked,
            self.acknowledged_changes,
            self.movements_read,
            if self.holds() { "holds" } else { "VIOLATED" }
        );
        for v in &self.violations {
            out.push_str(&format!("  {v}\n"));
        }
        out
    }
}

/// One row of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    pub delta: i64,
    pub quantity_after: i64,
    pub key: Option<String>,
}

/// What the stack holds for one product: its ledger, newest first, and its current
/// quantity (`None` once deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub movements: Vec<Movement>,
    pub quantity: Option<i64>,
}

/// Reads every product's ledger and compares it with what the run was told.
pub async fn check(
    base: &str,
    expectations: Vec<Expectation>,
    timeout: Duration,
) -> anyhow::Result<InvariantReport> {
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let base = base.trim_end_matches('/').to_owned();
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = JoinSet::new();
    for expectation in expectations {
        let (http, base, limit) = (http.clone(), base.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let observed = observe(&http, &base, &expectation).await;
            (expectation, observed)
        });
    }
    let mut report = InvariantReport::default();
    while let Some(joined) = tasks.join_next().await {
        let (expectation, observed) = joined?;
        report.products_checked += 1;
        report.acknowledged_changes += expectation.acknowledged_keys.len();
        match observed {
            Ok(observed) => {
                report.movements_read += observed.movements.len();
                report.violations.extend(compare(&expectation, &observed));
            }
            Err(err) => report.violations.push(format!(
                "product {}: cannot read its ledger: {err}",
                expectation.product_id
            )),
        }
    }
    report.violations.sort();
    Ok(report)
}

/// The differences between what a run was told and what the stack holds.
pub fn compare(expected: &Expectation, observed: &Observed) -> Vec<String> {
    let id = expected.product_id;
    let mut violations = Vec::new();
    let sum: i64 = observed.movements.iter().map(|m| m.delta).sum();
    let want = expected.expected_quantity();
    if sum != want {
        let unknown = expected
            .unacknowledged_keys
            .iter()
            .filter(|key| {
                observed
                    .movements
                    .iter()
                    .any(|m| m.key.as_ref() == Some(key))
            })
            .count();
        violations.push(format!(
            "product {id}: the ledger sums to {sum}, but the initial quantity plus the \
             acknowledged changes is {want} ({unknown} unacknowledged change(s) applied)"
        ));
    }
    if let Some(newest) = observed.movements.first() {
        if newest.quantity_after != sum {
            violations.push(format!(
                "product {id}: the ledger's newest row says {} but its deltas sum to {sum}",
                newest.quantity_after
            ));
        }
    }
    for key in &expected.acknowledged_keys {
        let times = observed
            .movements
            .iter()
            .filter(|m| m.key.as_deref() == Some(key.as_str()))
            .count();
        if times != 1 {
            violations.push(format!(
                "product {id}: acknowledged change {key} is in the ledger {times} time(s)"
            ));
        }
    }
    match observed.quantity {
        Some(quantity) if quantity != want => violations.push(format!(
            "product {id}: the quantity is {quantity}, expected {want}"
        )),
        Some(_) if expected.deleted => violations.push(format!(
            "product {id}: its deletion was acknowledged, but it is still there"
        )),
        None if !expected.deleted && !expected.delete_unconfirmed => {
            violations.push(format!("product {id}: it is gone, but was never deleted"));
        }
        _ => {}
    }
    violations
}

const LEDGER_QUERY: &str = "query($id: ID!, $after: String) { \
    product(id: $id) { quantity } \
    stockMovements(productId: $id, first: 100, after: $after) { \
      nodes { delta quantityAfter idempotencyKey } \
      pageInfo { hasNextPage endCursor } } }";

async fn observe(
    http: &reqwest::Client,
    base: &str,
    expected: &Expectation,
) -> anyhow::Result<Observed> {
    let mut client = Client::new(Remote::with_client(base, http.clone()));
    client.bearer = Some(expected.token.clone());
    let mut movements = Vec::new();
    let mut quantity = None;
    let mut after: Option<String> = None;
    loop {
        let variables = json!({ "id": expected.product_id.to_string(), "after": after });
        let response = client
            .try_send_built(requests::graphql(LEDGER_QUERY, variables))
            .await?;
        anyhow::ensure!(response.status.is_success(), "HTTP {}", response.status);
        let answer: Value = serde_json::from_slice(&response.body)?;
        if let Some(error) = answer["errors"].get(0) {
            anyhow::bail!("GraphQL error: {}", error["message"]);
        }
        let data = &answer["data"];
        if after.is_none() {
            quantity = int(&data["product"]["quantity"]);
        }
        let page = &data["stockMovements"];
        for node in page["nodes"].as_array().into_iter().flatten() {
            movements.push(Movement {
                delta: int(&node["delta"]).unwrap_or_default(),
                quantity_after: int(&node["quantityAfter"]).unwrap_or_default(),
                key: node["idempotencyKey"].as_str().map(str::to_owned),
            });
        }
        if page["pageInfo"]["hasNextPage"].as_bool() != Some(true) {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        if after.is_none() {
            anyhow::bail!("a ledger page has more but no cursor");
        }
    }
    Ok(Observed {
        movements,
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movement(delta: i64, after: i64, key: Option<&str>) -> Movement {
        Movement {
            delta,
            quantity_after: after,
            key: key.map(str::to_owned),
        }
    }

    fn expectation() -> Expectation {
        let mut e = Expectation {
            product_id: 7,
            initial: 10,
            ..Expectation::default()
        };
        e.acknowledge(5, "a".into());
        e.acknowledge(-3, "b".into());
        e
    }

    /// Newest first: +10 at creation, +5 (a), −3 (b).
    fn ledger() -> Vec<Movement> {
        vec![
            movement(-3, 12, Some("b")),
            movement(5, 15, Some("a")),
            movement(10, 10, None),
        ]
    }

    #[test]
    fn a_ledger_that_matches_holds() {
        let observed = Observed {
            movements: ledger(),
            quantity: Some(12),
        };
        assert_eq!(compare(&expectation(), &observed), Vec::<String>::new());
    }

    #[test]
    fn a_lost_change_is_found() {
        let mut movements = ledger();
        movements.remove(0);
        movements[0].quantity_after = 15;
        let observed = Observed {
            movements,
            quantity: Some(15),
        };
        let violations = compare(&expectation(), &observed);
        assert!(
            violations.iter().any(|v| v.contains("sums to 15")),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| v.contains("b is in the ledger 0")),
            "{violations:?}"
        );
        assert!(
            violations.iter().any(|v| v.contains("quantity is 15")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_change_applied_twice_is_found() {
        let mut movements = ledger();
        movements.insert(0, movement(-3, 9, Some("b")));
        let observed = Observed {
            movements,
            quantity: Some(9),
        };
        let violations = compare(&expectation(), &observed);
        assert!(
            violations
                .iter()
                .any(|v| v.contains("b is in the ledger 2")),
            "{violations:?}"
        );
        assert!(
            violations.iter().any(|v| v.contains("sums to 9")),
            "{violations:?}"
        );
    }

    #[test]
    fn an_unacknowledged_change_that_landed_is_a_difference_and_named_so() {
        let mut e = expectation();
        e.unacknowledged_keys.push("c".into());
        let mut movements = ledger();
        movements.insert(0, movement(1, 13, Some("c")));
        let observed = Observed {
            movements,
            quantity: Some(13),
        };
        let violations = compare(&e, &observed);
        assert!(
            violations
                .iter()
                .any(|v| v.contains("1 unacknowledged change(s) applied")),
            "{violations:?}"
        );
    }

    #[test]
    fn a_ledger_out_of_step_with_itself_is_found() {
        let mut movements = ledger();
        movements[0].quantity_after = 11;
        let observed = Observed {
            movements,
            quantity: Some(12),
        };
        let violations = compare(&expectation(), &observed);
        assert!(
            violations.iter().any(|v| v.contains("newest row says 11")),
            "{violations:?}"
        );
    }

    #[test]
    fn deletions_must_match_what_was_acknowledged() {
        let gone = Observed {
            movements: ledger(),
            quantity: None,
        };
        let there = Observed {
            movements: ledger(),
            quantity: Some(12),
        };
        let mut e = expectation();
        assert_eq!(compare(&e, &gone).len(), 1, "vanished without a delete");
        e.delete_unconfirmed = true;
        assert!(
            compare(&e, &gone).is_empty(),
            "an unconfirmed delete may have landed"
        );
        assert!(compare(&e, &there).is_empty(), "or not");
        e.deleted = true;
        assert!(compare(&e, &gone).is_empty());
        assert_eq!(compare(&e, &there).len(), 1, "acknowledged but still there");
    }
}
