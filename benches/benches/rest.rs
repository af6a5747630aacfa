//! REST serialisation: 1,000 products turned into the original service's JSON shape and
//! written out, as `GET /ecanteen/product` does after its query.
// A bench that cannot set up has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ecanteen_api::http::rest::products::RestProduct;
use ecanteen_api::service::Product;

fn products(count: usize) -> Vec<Product> {
    (0..count)
        .map(|n| Product {
            id: n as i64 + 1,
            owner_id: 1,
            name: format!("Nasi goreng {n}"),
            description: "Fried rice with egg and chicken".into(),
            price: 15_000 + (n as i64 % 10) * 1_000,
            quantity: 1_000,
            category: "makanan".into(),
            low_stock_threshold: None,
            image_ref: (n % 2 == 0).then(|| format!("{n:064x}")),
            image_ext: (n % 2 == 0).then(|| "png".into()),
            version: 1,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            deleted_at: None,
        })
        .collect()
}

fn serialise(c: &mut Criterion) {
    let products = products(1_000);
    let bytes = serde_json::to_vec(
        &products
            .iter()
            .map(|p| RestProduct::of(p.clone(), "saif".into()))
            .collect::<Vec<_>>(),
    )
    .expect("json")
    .len();
    let mut group = c.benchmark_group("rest");
    group.throughput(Throughput::Elements(products.len() as u64));
    group.bench_function("serialise 1,000 products", |b| {
        b.iter_batched(
            || products.clone(),
            |products| {
                let rest: Vec<RestProduct> = products
                    .into_iter()
                    .map(|p| RestProduct::of(p, "saif".into()))
                    .collect();
                let json = serde_json::to_vec(&rest).expect("json");
                assert_eq!(json.len(), bytes);
                json
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, serialise);
criterion_main!(benches);
