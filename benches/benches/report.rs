//! The sales report over a month of a busy stall, on SQLite and PostgreSQL.
//!
//! The stall has 40 products and 1,500 ledger rows a day for 31 days (46,500 rows:
//! sales, with restocks and waste among them, at seven prices); four neighbouring stalls
//! have as many, so the ledger holds 232,500 rows and the report must find its own.
//!
//! - `salesReport month/<engine>/by day` and `…/by product`: `Service::sales_report`
//!   for the 31 days (the goal: under 50 ms);
//! - `salesReport month/<engine>/anchor: count the month's rows`: the least any report
//!   must read (the stall's rows in the range, counted and summed in one statement),
//!   through the same pool: the report's time is given as a ratio to it.
// A bench that cannot set up has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion};
use ecanteen_api::db::Sql;
use ecanteen_api::service::{Actor, AuthMethod, ReportGrouping, ReportRequest};
use ecanteen_benches::{new_product, Engine, Fixture, PASSWORD};

const STALLS: usize = 5;
const PRODUCTS: usize = 40;
const ROWS_PER_DAY: i64 = 1_500;
const DAYS: i64 = 31;
/// 2026-10-31T17:00:00Z: 2026-11-01 00:00 in Jakarta.
const START_MS: i64 = 1_793_466_000_000;

/// Writes a month of one stall's ledger in one statement: row `i` is at an even spacing
/// over the month, on product `first + i % 40`, mostly a sale.
async fn seed(fixture: &Fixture, first_product: i64, actor: i64) {
    let rows = ROWS_PER_DAY * DAYS;
    let step = DAYS * 86_400_000 / rows;
    let sql = Sql::new(format!(
        "with recursive n(i) as (select cast(0 as bigint) union all select i + 1 from n where i < {last})
         insert into stock_movements
             (product_id, actor_id, delta, quantity_after, reason, note, created_at, unit_price)
         select $1 + i % {PRODUCTS}, $2,
                case when i % 30 = 0 then 40 else -1 end, 100,
                case when i % 30 = 0 then 'RESTOCK' when i % 50 = 1 then 'WASTE' else 'SALE' end,
                null, $3 + i * {step}, 5000 + (i % 7) * 500
         from n",
        last = rows - 1,
    ))
    .arg(first_product)
    .arg(actor)
    .arg(START_MS);
    fixture
        .state
        .service
        .db()
        .execute(&sql)
        .await
        .expect("seed the ledger");
}

async fn busy_month(engine: Engine) -> anyhow::Result<Fixture> {
    let fixture = Fixture::new(engine, PRODUCTS).await?;
    let service = &fixture.state.service;
    seed(&fixture, fixture.products[0].id, fixture.actor.user_id).await;
    for stall in 1..STALLS {
        let user = service
            .register(&format!("neighbour{stall}"), PASSWORD, None)
            .await?;
        let actor = Actor {
            user_id: user.id,
            method: AuthMethod::Session,
        };
        let mut first = None;
        for n in 0..PRODUCTS {
            let product = service
                .create_product(&actor, new_product(n)?, None)
                .await?;
            first.get_or_insert(product.id);
        }
        seed(&fixture, first.unwrap_or(0), user.id).await;
    }
    if engine == Engine::Postgres {
        // As autovacuum would have, by the end of a month: the visibility map lets the
        // report read the index alone.
        service
            .db()
            .execute(&Sql::new("vacuum analyze stock_movements"))
            .await?;
    }
    Ok(fixture)
}

fn sales_report(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("salesReport month");
    let from = NaiveDate::from_ymd_opt(2026, 11, 1).expect("a date");
    let to = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let fixture = match rt.block_on(busy_month(engine)) {
            Ok(fixture) => fixture,
            Err(err) => {
                eprintln!("skipped on {}: {err:#}", engine.name());
                continue;
            }
        };
        let service = fixture.state.service.clone();
        let actor = fixture.actor;
        for (label, grouping) in [
            ("by day", ReportGrouping::Day),
            ("by product", ReportGrouping::Product),
        ] {
            let request = ReportRequest {
                from,
                to,
                grouping,
                top: 5,
            };
            // The month is all there, in both groupings.
            let report = rt
                .block_on(service.sales_report(&actor, request))
                .expect("report");
            assert!(report.totals.units_sold + report.totals.units_wasted > 40_000);
            group.bench_function(format!("{}/{label}", engine.name()), |b| {
                b.to_async(&rt).iter(|| {
                    let service = service.clone();
                    async move { service.sales_report(&actor, request).await.expect("report") }
                });
            });
        }
        let anchor = Sql::new(
            "select count(*) from products p join stock_movements m on m.product_id = p.id
             where p.owner_id = $1 and m.created_at >= $2 and m.created_at < $3",
        )
        .arg(actor.user_id)
        .arg(START_MS)
        .arg(START_MS + DAYS * 86_400_000);
        group.bench_function(
            format!("{}/anchor: count the month's rows", engine.name()),
            |b| {
                b.to_async(&rt).iter(|| {
                    let (service, anchor) = (service.clone(), anchor.clone());
                    async move {
                        let rows: i64 = service.db().scalar(&anchor).await.expect("count");
                        assert!(rows >= ROWS_PER_DAY * DAYS);
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, sales_report);
criterion_main!(benches);
