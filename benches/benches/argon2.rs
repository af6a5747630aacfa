//! argon2id at the configured cost (the replica's defaults, the OWASP minimum: 19 MiB,
//! two passes, one lane). It is slow on purpose: each hash costs tens of milliseconds of
//! one core, which is what makes guessing passwords expensive, and what caps logins per
//! core. Hashing runs on tokio's blocking pool, as in the replica.
// A bench that cannot set up has nothing to measure: it stops at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ecanteen_api::config::Config;
use ecanteen_api::domain::Password;
use ecanteen_api::service::PasswordHasher;

fn argon2(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = Config::defaults();
    let hasher = PasswordHasher::new(
        config.argon2_memory_kib,
        config.argon2_iterations,
        config.argon2_parallelism,
    )
    .expect("hasher");
    let password = Password::parse("password", "correct horse battery").expect("password");
    let stored = rt.block_on(hasher.hash(&password)).expect("hash");

    let mut group = c.benchmark_group(format!(
        "argon2id m={} KiB t={} p={}",
        config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism
    ));
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("hash (register)", |b| {
        b.to_async(&rt)
            .iter(|| async { hasher.hash(&password).await.expect("hash") });
    });
    group.bench_function("verify (login)", |b| {
        b.to_async(&rt).iter(|| async {
            assert!(hasher
                .verify(&password, Some(&stored))
                .await
                .expect("verify"));
        });
    });
    group.finish();
}

criterion_group!(benches, argon2);
criterion_main!(benches);
