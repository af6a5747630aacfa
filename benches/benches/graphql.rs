//! GraphQL execution, in process: the catalogue's page of 50 products with their owners
//! (one query for the page, one batched query for the owners), serialised to JSON as the
//! HTTP layer would send it.
// A bench that cannot set up has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ecanteen_api::graphql::{request_data, RequestAuth};

const PAGE: &str = "{ products(first: 50) { nodes { id name description price quantity \
    category isLowStock imageUrl owner { id username } } } }";

fn products_page(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("graphql products(first: 50) with owners");
    group.throughput(Throughput::Elements(1));
    for (engine, fixture) in ecanteen_benches::fixtures(&rt, 50) {
        let schema = fixture.state.schema.clone();
        let service = fixture.state.service.clone();
        group.bench_function(engine.name(), |b| {
            b.to_async(&rt).iter(|| async {
                let (auth, loader) = request_data(&service, RequestAuth::default());
                let response = schema
                    .execute(async_graphql::Request::new(PAGE).data(auth).data(loader))
                    .await;
                assert!(response.errors.is_empty(), "{:?}", response.errors);
                serde_json::to_vec(&response).expect("json")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, products_page);
criterion_main!(benches);
