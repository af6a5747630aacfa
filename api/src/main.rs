//! `ecanteen-api`: one replica. All the work is in the library; see `lib.rs`.

use clap::Parser as _;
use ecanteen_api::config::Config;
use ecanteen_api::startup::{shutdown_signal, Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    ecanteen_api::telemetry::init(config.log_format);
    let app = Application::build(&config).await?;
    // Scripts (and the balancer's --spawn) read the bound address from this line.
    println!("ecanteen-api listening on http://{}", app.local_addr()?);
    tracing::info!(addr = %app.local_addr()?, database = %redact(&config.database_url), "ready");
    app.run_until_stopped(shutdown_signal()).await
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
