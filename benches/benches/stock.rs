//! `adjustStock` transactions, in process, on SQLite and PostgreSQL: one conditional
//! update plus a ledger row (plus the idempotency record, when a key is given), in one
//! transaction. Deltas alternate −1 and +1 on one product, so stock never runs out.
// A bench that cannot set up has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

criterion_group!(benches, adjust_stock);
criterion_main!(benches);
