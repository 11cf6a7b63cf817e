//! `suppressd`: parse the command line, set up telemetry, run the command until a signal, flush.

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
            // Dropped last, after the server and the worker stopped: it flushes their last spans.
            let _telemetry = telemetry::init(settings.log_format)?;
            let app = Application::build(&settings, Clock::System).await?;
            app.run_until(shutdown_signal()).await
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
