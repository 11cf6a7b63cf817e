//! `suppressd-bench`: the load generator, the benchmark suite, and the two servers the suite measures
//! suppressd against (the empty handlers, and suppressd without its audit log).

use clap::{Parser, Subcommand};
use suppressd::{config::ServeSettings, domain::Clock, startup, telemetry};
use suppressd_bench::{BenchSettings, baseline::BaselineSettings, suite::SuiteSettings};

/// The same allocator as the service, so the baselines differ from it only in what they measure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "suppressd-bench",
    version,
    about = "Load tests and benchmarks suppressd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Load-tests a server of `suppress.v1.Suppression` the way ghz does (same flags, same reports,
    /// ghz's configuration files with --config).
    #[command(args_override_self = true)]
    Load(BenchSettings),
    /// Measures SPEC §8 side by side with its baselines (`scripts/bench` builds and runs it).
    Suite(SuiteSettings),
    /// Serves empty handlers on the same proto: the benchmark's baseline.
    Baseline(BaselineSettings),
    /// suppressd itself, but committing opt-outs WITHOUT audit entries: the baseline that the
    /// suite measures the audit log's cost against. Breaks SPEC §5.5 on purpose; needs
    /// --dev-no-auth (and so listens on loopback only).
    ServeUnaudited(ServeSettings),
    /// suppressd itself, but with its shared Redis connection on redis-rs's `ConnectionManager`
    /// instead of deadpool (standalone Redis only): the baseline the suite measures the connection
    /// layer against. Needs --dev-no-auth.
    ServeConnectionManager(ServeSettings),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `load --config FILE`: the file's flags go first, right after `load`, so the command line's
    // own flags override them.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(load) = argv.iter().position(|a| a == "load") {
        argv = suppressd_bench::args::expand_config(argv, load + 1)?;
    }
    match Cli::parse_from(argv).command {
        Command::Load(settings) => {
            // A subscriber that wants nothing: without any, every span h2 and tonic open for each
            // frame goes through `log`'s fallback (about 9,000 of the 110,000 instructions an
            // `OptOut` call cost this client).
            tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())?;
            suppressd_bench::main(settings).await
        }
        Command::Suite(settings) => suppressd_bench::suite::main(settings).await,
        Command::Baseline(settings) => {
            // suppressd's own subscriber, as `serve` installs it: without one, every span of the
            // libraries below (h2, tower) is logged through `log` and costs the empty handler
            // work that the server, whose subscriber turns them off, does not do.
            let _telemetry = telemetry::init(telemetry::LogFormat::Text)?;
            suppressd_bench::baseline::main(settings, startup::shutdown_signal()).await
        }
        Command::ServeUnaudited(mut settings) => {
            anyhow::ensure!(
                settings.auth.dev_no_auth,
                "serve-unaudited is a benchmark baseline and needs --dev-no-auth"
            );
            settings.bench_unaudited = true;
            let _telemetry = telemetry::init(settings.log_format)?;
            let app = startup::Application::build(&settings, Clock::System).await?;
            app.run_until(startup::shutdown_signal()).await
        }
        Command::ServeConnectionManager(mut settings) => {
            anyhow::ensure!(
                settings.auth.dev_no_auth,
                "serve-connection-manager is a benchmark baseline and needs --dev-no-auth"
            );
            settings.bench_connection_manager = true;
            let _telemetry = telemetry::init(settings.log_format)?;
            let app = startup::Application::build(&settings, Clock::System).await?;
            app.run_until(startup::shutdown_signal()).await
        }
    }
}
