//! `adjustStock` transactions, in process, on SQLite and PostgreSQL: one conditional
//! update plus a ledger row (plus the idempotency record, when a key is given), in one
//! transaction. Deltas alternate −1 and +1, so stock never runs out.
//!
//! - `adjustStock/<engine>/plain` and `…/with idempotency key`: one change at a time on
//!   one product;
//! - `adjustStock concurrent/<engine>`: 32 tasks, each changing the 64 products in turn
//!   with an idempotency key per change, as 32 clients would: the throughput to compare
//!   with the engine's own ceiling (`benches/engine/ceiling.sh`).
// A bench that cannot set up has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ecanteen_api::domain::{IdempotencyKey, StockDelta, StockReason};
use ecanteen_api::service::AdjustStock;

fn adjust_stock(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("adjustStock");
    group.throughput(Throughput::Elements(1));
    for (engine, fixture) in ecanteen_benches::fixtures(&rt, 1) {
        let service = fixture.state.service.clone();
        let actor = fixture.actor;
        let product_id = fixture.products[0].id;
        for keyed in [false, true] {
            let name = format!(
                "{}/{}",
                engine.name(),
                if keyed {
                    "with idempotency key"
                } else {
                    "plain"
                }
            );
            let mut n: u64 = 0;
            group.bench_function(name, |b| {
                b.to_async(&rt).iter(|| {
                    n += 1;
                    let delta = if n % 2 == 1 { -1 } else { 1 };
                    let key = keyed.then(|| {
                        IdempotencyKey::parse("idempotencyKey", &format!("bench-{keyed}-{n}"))
                            .expect("key")
                    });
                    let service = service.clone();
                    async move {
                        service
                            .adjust_stock(
                                &actor,
                                AdjustStock {
                                    product_id,
                                    delta: StockDelta::parse("delta", delta).expect("delta"),
                                    reason: Some(StockReason::Sale),
                                    note: None,
                                    expected_quantity: None,
                                    idempotency_key: key,
                                },
                            )
                            .await
                            .expect("adjustStock")
                    }
                });
            });
        }
    }
    group.finish();
}

/// Tasks changing stock at once in the concurrent bench.
const TASKS: u64 = 32;

fn adjust_stock_concurrently(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("adjustStock concurrent");
    group.throughput(Throughput::Elements(1));
    let mut round: u64 = 0;
    for (engine, fixture) in ecanteen_benches::fixtures(&rt, 64) {
        let service = fixture.state.service.clone();
        let actor = fixture.actor;
        let products: Vec<i64> = fixture.products.iter().map(|p| p.id).collect();
        group.bench_function(format!("{} (32 tasks)", engine.name()), |b| {
            b.to_async(&rt).iter_custom(|changes| {
                round += 1;
                let (service, products) = (service.clone(), products.clone());
                async move {
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for task in 0..TASKS {
                        let (service, products) = (service.clone(), products.clone());
                        let share = changes / TASKS + u64::from(task < changes % TASKS);
                        tasks.push(tokio::spawn(async move {
                            for n in 0..share {
                                let product_id =
                                    products[((task * 7 + n) % products.len() as u64) as usize];
                                let key = format!("bench-{round}-{task}-{n}");
                                service
                                    .adjust_stock(
                                        &actor,
                                        AdjustStock {
                                            product_id,
                                            delta: StockDelta::parse(
                                                "delta",
                                                if n % 2 == 0 { -1 } else { 1 },
                                            )
                                            .expect("delta"),
                                            reason: Some(StockReason::Sale),
                                            note: None,
                                            expected_quantity: None,
                                            idempotency_key: Some(
                                                IdempotencyKey::parse("idempotencyKey", &key)
                                                    .expect("key"),
                                            ),
                                        },
                                    )
                                    .await
                                    .expect("adjustStock");
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.expect("task");
                    }
                    start.elapsed().max(Duration::from_nanos(1))
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, adjust_stock, adjust_stock_concurrently);
criterion_main!(benches);
