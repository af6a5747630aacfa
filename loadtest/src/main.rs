use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ecanteen_loadtest::cli::Cli::parse();
    match cli.run().await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ecanteen-loadtest: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
