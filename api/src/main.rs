//! `ecanteen-api`: one replica. All the work is in the library; see `lib.rs`.

use clap::Parser as _;
use ecanteen_api::config::Config;
use ecanteen_api::startup::{inherited_listener, shutdown_signal, Application};

fn main() -> anyhow::Result<()> {
    // A socket handed over by a supervisor is taken while this is the only thread (its
    // variables leave the environment).
    let inherited = inherited_listener()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(inherited))
}

async fn run(inherited: Option<std::net::TcpListener>) -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry =
        ecanteen_api::telemetry::init(config.log_format, config.otlp_endpoint.as_deref())?;
    let app = Application::build_on(&config, inherited).await?;
    // Scripts (and the balancer's --spawn) read the bound address from this line.
    println!("ecanteen-api listening on http://{}", app.local_addr()?);
    tracing::info!(addr = %app.local_addr()?, database = %redact(&config.database_url), "ready");
    let ran = if config.exit_with_parent {
        app.run_until_stopped(async {
            tokio::select! {
                () = shutdown_signal() => {},
                () = parent_gone() => {},
            }
        })
        .await
    } else {
        app.run_until_stopped(shutdown_signal()).await
    };
    // The exporter's last batch is sent from a thread of its own: not on the runtime.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    ran
}

/// Completes when standard input reaches its end: the supervising parent closed the
/// pipe, or died.
async fn parent_gone() {
    use tokio::io::AsyncReadExt as _;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// The database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
