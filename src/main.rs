//! `suppressd`: parse the command line, set up logging, run the command until a signal.

use clap::Parser;
use suppressd::{
    auth,
    config::{Cli, Command, KeysCommand},
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
        Command::Keys(command) => keys(command),
    }
}

/// `suppressd keys …`: prints what goes into the key file. The API key is printed once, here; the
/// file only ever holds its hash.
fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New {
            name,
            roles,
            tenants,
        } => {
            for role in &roles {
                auth::Role::parse(role)?;
            }
            let key = auth::new_api_key();
            let quote = |v: &[String]| {
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            eprintln!("API key for {name:?} (give it to the caller; it is not stored):");
            println!("# API key: {key}");
            println!("[[principal]]");
            println!("name = {name:?}");
            println!("roles = [{}]", quote(&roles));
            if !tenants.is_empty() {
                println!("tenants = [{}]", quote(&tenants));
            }
            println!("key_sha256 = [\"{}\"]", auth::hash_key(&key));
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            println!("{}", auth::hash_key(key.trim()));
        }
        KeysCommand::TokenKey { id } => {
            let secret: [u8; 32] = rand::random();
            println!("[[token_key]]");
            println!("id = {id:?}");
            println!("secret = \"{}\"", hex::encode(secret));
            println!("issue = true");
        }
    }
    Ok(())
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
