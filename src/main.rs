//! `suppressd`: parse the command line, set up telemetry, run the command until a signal, flush.

use clap::Parser;
use suppressd::{
    cli,
    cli::args::{AuditCommand, Cli, Command, ReceiptCommand},
    config::pepper_or_development,
    domain::Clock,
    startup::{Application, shutdown_signal},
    telemetry,
};

/// mimalloc instead of the system allocator: a gRPC call allocates and frees dozens of small buffers
/// (HTTP/2 frames, headers, protobuf messages, Redis replies), and glibc's malloc took about a sixth
/// of the server's CPU under the check benchmark (perf, `_int_malloc`, `malloc_consolidate`, `free`).
/// Built without transparent huge pages (`no_thp`): where the kernel grants them on request, as
/// Debian's does, mimalloc asked for them on its whole arena, and every 2 MiB page any live
/// allocation touched stayed resident (13 MiB more for an idle replica after the suite's load; with
/// the near-cache, 1 B more per record at a million). The check path's CPU did not change.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let printed = match cli.command {
        Command::Serve(settings) => {
            // Dropped last, after the server and the worker stopped: it flushes their last spans.
            let _telemetry = telemetry::init(settings.log_format)?;
            let app = Application::build(&settings, Clock::System).await?;
            return app.run_until(shutdown_signal()).await;
        }
        Command::Keys(command) => return cli::keys::keys(command),
        Command::Audit(AuditCommand::Keygen { name }) => cli::audit::keygen(&name)?,
        Command::Audit(AuditCommand::Verify {
            store_url,
            public_key,
            trusted_checkpoint,
        }) => cli::audit::verify(&store_url, &public_key, trusted_checkpoint.as_deref()).await?,
        Command::Audit(AuditCommand::Export {
            store_url,
            pepper,
            tenant,
            recipient,
            all,
        }) => {
            let (pepper, _) = pepper_or_development(pepper.as_deref())?;
            let who = match (recipient.parse()?, all) {
                (Some(r), false) => Some(r),
                (None, true) => None,
                _ => anyhow::bail!("name one recipient (--email, --phone, …) or --all"),
            };
            cli::audit::export(
                &store_url,
                &pepper,
                who.as_ref().map(|r| (r, tenant.as_str())),
            )
            .await?
        }
        Command::Receipt(ReceiptCommand::Get { receipt_id, server }) => {
            cli::receipt::get(&server, &receipt_id).await?
        }
        Command::Receipt(ReceiptCommand::Verify {
            file,
            public_key,
            server,
            tls,
        }) => cli::receipt::verify(&file, &public_key, server.as_deref(), &tls).await?,
        Command::OptIn(args) => cli::rights::opt_in(args).await?,
        Command::OptInToken(args) => cli::rights::opt_in_token(args).await?,
        Command::Records(args) => cli::rights::records(args).await?,
        // Imports (issue 5): kept in one block.
        Command::Import(args) => {
            let (summary, status) = cli::import::import(args).await?;
            print!("{summary}");
            std::process::exit(status as i32);
        }
        Command::Rollback(args) => cli::import::rollback(args).await?,
        Command::Imports(cli::args::ImportsCommand::List { limit, server }) => {
            cli::import::list(limit, &server).await?
        }
        Command::Halt(args) => cli::controls::halt(args).await?,
        Command::Resume(args) => cli::controls::resume(args).await?,
        Command::Mandatory(command) => cli::controls::mandatory(command).await?,
        Command::Window(command) => cli::controls::window(command).await?,
        Command::Consent(command) => cli::consent::consent(command).await?,
        Command::Trigger(command) => cli::triggers::trigger(command).await?,
        Command::Destinations(command) => cli::destinations::destinations(command).await?,
        Command::Controls(command) => cli::controls::controls(command).await?,
        Command::Health(args) => cli::health::health(args).await?,
        Command::Check(args) => {
            let (printed, status) = cli::send::check(args).await?;
            print!("{printed}");
            std::process::exit(status);
        }
        Command::OptOut(args) => cli::send::opt_out(args).await?,
    };
    print!("{printed}");
    Ok(())
}
