//! `ecanteen-balancer`: see `lib.rs`.

use clap::Parser as _;

/// mimalloc rather than glibc's allocator: a profile under load showed glibc's malloc
/// and free at about 8 % of the balancer's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use ecanteen_balancer::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_target(false)
        // Colours for a person at a terminal; plain text for a file or a supervisor.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let built = match ecanteen_balancer::server::build(&config) {
        Ok(built) => built,
        Err(err) => {
            // One line, the causes joined: "cannot listen on …: Address already in use".
            eprintln!("ecanteen-balancer: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests read the addresses from this line (port 0 resolved), printed
    // once both ports are held by this process.
    println!(
        "ecanteen-balancer listening on http://{} (admin http://{})",
        built.listen, built.admin
    );
    // Never returns, so the reservation is held for the server's whole life.
    let _reservation = built.reservation;
    built.server.run_forever()
}

/// `RUST_LOG` (default `info`), except that pingora's own crates never log below
/// `info`: at `debug` they print whole request and response headers, and with them
/// session cookies and bearer tokens.
fn log_filter() -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for krate in [
        "pingora",
        "pingora_core",
        "pingora_proxy",
        "pingora_http",
        "pingora_load_balancing",
        "pingora_pool",
        "pingora_timeout",
        "pingora_error",
        "pingora_runtime",
    ] {
        if let Ok(directive) = format!("{krate}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
