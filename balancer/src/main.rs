//! `ecanteen-balancer`: see `lib.rs`.

use clap::Parser as _;

/// mimalloc rather than glibc's allocator: a profile under load showed glibc's malloc
/// and free at about 8 % of the balancer's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ecanteen_balancer::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let server = ecanteen_balancer::server::build(&config)?;
    // Scripts and tests read the address from this line.
    println!(
        "ecanteen-balancer listening on http://{} (admin http://{})",
        config.listen, config.admin
    );
    server.run_forever()
}
