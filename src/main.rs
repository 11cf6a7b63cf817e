//! `suppressd`: parse the command line, set up logging, run the command until a signal.

use clap::Parser;
use suppressd::{
    config::{Cli, Command},
    domain::Clock,
    startup::Application,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(settings) => {
            let _telemetry = telemetry::init(settings.log_format);
            let app = Application::build(&settings, Clock::System).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Bench(settings) => suppressd::bench::main(settings).await,
        Command::BenchSuite(settings) => suppressd::bench::suite::main(settings).await,
        Command::BenchBaseline(settings) => {
            suppressd::bench::baseline::main(settings, shutdown_signal()).await
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
