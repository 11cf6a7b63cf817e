//! The command line of the `suppressd` binary, all of it: every command, its flags and their
//! environment variables (clap derive). Parsing connects to nothing; the commands themselves live
//! beside this module ([`super`]), `serve`'s settings in [`crate::config`].

mod controls;
mod import;
mod send;

pub(crate) use controls::{
    ConsentCommand, ControlsCommand, DestinationCommand, HaltArgs, MandatoryCommand,
    RecordConsentArgs, ResumeArgs, TriggerCommand, WindowCommand,
};
pub use import::ImportsCommand;
pub(crate) use import::{Format, ImportArgs, RollbackArgs};
pub(crate) use send::{ReasonArg, SourceArg};
pub use send::{SendCheckArgs, SendOptOutArgs};

use crate::{
    config::ServeSettings,
    domain::{Recipient, RecipientKind},
};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "suppressd",
    version,
    about = "May this notice go to this person on this channel, now?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs the gRPC service and its write-behind worker.
    Serve(ServeSettings),
    /// Makes API keys and token keys for the key file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log: make a signing key, verify the whole log, export one person's entries.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Receipts: fetch one with its proof, verify a saved one offline.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Opts a person back in: with their opt-in token, or as an admin with written grounds.
    OptIn(OptInArgs),
    /// Mints a person's opt-in token (admin; at most an hour), after they confirmed it is them.
    OptInToken(OptInTokenArgs),
    /// Lists every record kept about one person within a tenant, with its history.
    Records(RecordsArgs),
    // Imports (issue 5): kept in one block.
    /// Bulk-imports suppressions from a CSV or JSON-lines file, streamed, with a progress bar.
    Import(ImportArgs),
    /// Rolls back one import batch: ends exactly the records it created, nothing a person created.
    Rollback(RollbackArgs),
    /// Import batches.
    #[command(subcommand)]
    Imports(ImportsCommand),
    /// Halts a campaign on every replica until resumed (role admin).
    Halt(HaltArgs),
    /// Ends a halt: checks answer as they did before it (role admin).
    Resume(ResumeArgs),
    /// Mandatory declarations: topics that opt-outs do not suppress on some channels.
    #[command(subcommand)]
    Mandatory(MandatoryCommand),
    /// Send windows: the hours notices may go, on the recipient's wall clock (role admin).
    #[command(subcommand)]
    Window(WindowCommand),
    /// Consent-required topics and a person's consents.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Halt triggers: automatic halts when a campaign's opt-outs or complaints pass a threshold
    /// (role admin).
    #[command(subcommand)]
    Trigger(TriggerCommand),
    /// Webhook destinations: where every change goes, signed (role admin).
    #[command(subcommand)]
    Destinations(DestinationCommand),
    /// Lists the halts, mandatory declarations, send windows, consent requirements and halt
    /// triggers of a tenant.
    #[command(subcommand)]
    Controls(ControlsCommand),
    /// Asks a running server's health (no key needed): exits 0 when SERVING, 1 otherwise.
    Health(HealthArgs),
    /// May this notice go to this person now? Exits 0 only when the server says it may.
    Check(SendCheckArgs),
    /// Records a person's opt-out (role write), as a support agent would.
    OptOut(SendOptOutArgs),
}

/// `suppressd health`: for container HEALTHCHECKs and scripts. `--service liveness` asks whether the
/// process answers at all; the default ("") is readiness, which follows Redis and the store.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The server (host:port, or an http:// or https:// URL).
    #[arg(long, env = "SUPPRESSD_SERVER", default_value = "127.0.0.1:50051")]
    pub(crate) server: String,
    /// The health service to ask: "" (readiness, the default), `readiness`, `liveness` or
    /// `suppress.v1.Suppression`.
    #[arg(long, default_value = "")]
    pub(crate) service: String,
    /// How long to wait for the connection, and then for the answer.
    #[arg(long, default_value_t = 2000)]
    pub(crate) timeout_ms: u64,
    /// Speak TLS, trusting this CA (PEM) for the server's certificate.
    #[arg(long, env = "SUPPRESSD_TLS_CA", visible_alias = "cacert")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// For mTLS: this client certificate (PEM), with --tls-key.
    #[arg(long, requires = "tls_key", visible_alias = "cert")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "tls_cert", visible_alias = "key")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when it is not the host in --server.
    #[arg(long)]
    pub(crate) tls_domain: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Prints a new Ed25519 signing key and its public key (C2SP note key format).
    Keygen {
        /// The key's name, e.g. the log's host name.
        #[arg(long, default_value = "suppressd")]
        name: String,
    },
    /// Recomputes the whole log from the store, checks every checkpoint's signature and that each
    /// matches the entries; exits non-zero naming the first bad index.
    Verify {
        #[arg(
            long,
            env = "SUPPRESSD_STORE_URL",
            default_value = "sqlite://data/suppressd.db"
        )]
        store_url: String,
        /// The log's public key (`name+id+base64`).
        #[arg(long, env = "SUPPRESSD_AUDIT_PUBLIC_KEY")]
        public_key: String,
        /// A checkpoint saved earlier (a signed note file); the log must extend it. This is what
        /// catches a history rewritten and re-signed with the right key.
        #[arg(long)]
        trusted_checkpoint: Option<String>,
    },
    /// Writes one person's entries (or, with --all, every entry) with inclusion proofs as JSON.
    Export {
        #[arg(
            long,
            env = "SUPPRESSD_STORE_URL",
            default_value = "sqlite://data/suppressd.db"
        )]
        store_url: String,
        #[arg(long, env = "SUPPRESSD_PEPPER", hide_env_values = true)]
        pepper: Option<String>,
        #[arg(long, default_value = "")]
        tenant: String,
        #[command(flatten)]
        recipient: RecipientArgs,
        /// Export every entry instead of one person's.
        #[arg(long, conflicts_with_all = ["email", "phone", "user_id", "push_token", "postal_address"])]
        all: bool,
    },
}

/// One recipient, named on the command line.
#[derive(Args, Debug, Clone)]
#[group(multiple = false)]
pub struct RecipientArgs {
    #[arg(long)]
    pub(crate) email: Option<String>,
    #[arg(long)]
    pub(crate) phone: Option<String>,
    #[arg(long)]
    pub(crate) user_id: Option<String>,
    #[arg(long)]
    pub(crate) push_token: Option<String>,
    #[arg(long)]
    pub(crate) postal_address: Option<String>,
}

impl RecipientArgs {
    pub fn parse(&self) -> anyhow::Result<Option<Recipient>> {
        let named = [
            (RecipientKind::Email, &self.email),
            (RecipientKind::Phone, &self.phone),
            (RecipientKind::UserId, &self.user_id),
            (RecipientKind::PushToken, &self.push_token),
            (RecipientKind::PostalAddress, &self.postal_address),
        ];
        named
            .into_iter()
            .find_map(|(kind, v)| v.as_deref().map(|v| Recipient::parse(kind, v)))
            .transpose()
            .map_err(Into::into)
    }
}

/// The server a client command calls, how it is trusted (TLS, mTLS), and the key it calls with.
/// Every client command flattens this, so they all reach a production server the same way.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The server (host:port, or an http:// or https:// URL). host:port means plaintext unless
    /// --cacert or --cert is given.
    #[arg(long, env = "SUPPRESSD_SERVER", default_value = "127.0.0.1:50051")]
    pub(crate) server: String,
    /// The API key to send (`authorization: Bearer …`); operator commands need an admin's. Prefer
    /// the environment variable: a flag shows in the process list. Never printed.
    #[arg(long, env = "SUPPRESSD_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

/// The key is never printed, not even in a debug dump of the arguments.
impl std::fmt::Debug for ServerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerArgs")
            .field("server", &self.server)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// How a client command trusts the server and proves itself without a key (mTLS).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Speak TLS, trusting this CA (PEM) for the server's certificate (default with https://: the
    /// public web roots).
    #[arg(long, env = "SUPPRESSD_CACERT")]
    pub(crate) cacert: Option<std::path::PathBuf>,
    /// For mTLS: this client certificate (PEM), with --key.
    #[arg(long, env = "SUPPRESSD_CERT", requires = "key")]
    pub(crate) cert: Option<std::path::PathBuf>,
    /// For mTLS: the client certificate's private key (PEM), with --cert.
    #[arg(long, env = "SUPPRESSD_KEY", requires = "cert")]
    pub(crate) key: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when it is not the host in --server.
    #[arg(long, env = "SUPPRESSD_TLS_DOMAIN")]
    pub(crate) tls_domain: Option<String>,
}

/// A channel on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelArg {
    Email,
    Sms,
    Push,
    Voice,
    Postal,
}

/// A scope on the command line; unset channel, topic or campaign are the wildcards.
#[derive(Args, Debug, Clone)]
pub(crate) struct ScopeArgs {
    #[arg(long, default_value = "")]
    pub(crate) tenant: String,
    /// Unset: every channel.
    #[arg(long, value_enum)]
    pub(crate) channel: Option<ChannelArg>,
    /// Unset: every topic.
    #[arg(long, default_value = "")]
    pub(crate) topic: String,
    /// Unset: every campaign.
    #[arg(long, default_value = "")]
    pub(crate) campaign: String,
}

#[derive(Args, Debug)]
pub struct OptInArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The person's opt-in token: it names the person and the scope (no key needed).
    #[arg(long, conflicts_with_all = ["email", "phone", "user_id", "push_token", "postal_address", "reason"])]
    pub(crate) token: Option<String>,
    #[command(flatten)]
    pub(crate) recipient: RecipientArgs,
    /// The exact scope of the opt-out to remove.
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// Without a token: the admin's written grounds (logged).
    #[arg(long)]
    pub(crate) reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct OptInTokenArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) recipient: RecipientArgs,
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// Lifetime in seconds (at most 3600; the server's default is 900).
    #[arg(long)]
    pub(crate) ttl_secs: Option<i64>,
}

#[derive(Args, Debug)]
pub struct RecordsArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The person's own opt-out token, in place of recipient, tenant and key.
    #[arg(long, conflicts_with_all = ["email", "phone", "user_id", "push_token", "postal_address"])]
    pub(crate) token: Option<String>,
    #[command(flatten)]
    pub(crate) recipient: RecipientArgs,
    #[arg(long, default_value = "")]
    pub(crate) tenant: String,
}

#[derive(Subcommand, Debug)]
pub enum ReceiptCommand {
    /// Prints a receipt as JSON; once DURABLE it carries its audit entry and proof.
    Get {
        receipt_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Checks a saved receipt (JSON from `receipt get` or grpcurl) with the public key alone.
    Verify {
        file: String,
        #[arg(long, env = "SUPPRESSD_AUDIT_PUBLIC_KEY")]
        public_key: String,
        /// Also ask this server for its latest checkpoint and prove the log only grew since (no
        /// key needed; --cacert, --cert and --key as for every client command).
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// `suppressd keys …`: the key file holds hashes and token secrets; these print what to paste.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Prints a fresh API key (give it to the caller) and the `[[principal]]` entry with its hash.
    ///
    /// Standard output is the entry alone (`>> keys.toml` is safe); the key itself goes to standard
    /// error, or with --key-out to a new file that only its owner may read.
    New {
        /// The principal's name, recorded as the actor of its opt-outs.
        #[arg(long)]
        name: String,
        /// check, write or admin (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Restricts the principal to these tenants (repeatable; none = every tenant).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Write the API key to this new file (mode 600) instead of standard error.
        #[arg(long)]
        key_out: Option<std::path::PathBuf>,
    },
    /// Reads an API key on standard input and prints its SHA-256, as `key_sha256` wants it.
    Hash,
    /// Prints a `[[token_key]]` entry with a fresh random secret.
    TokenKey {
        /// The key id (travels in each token's footer), e.g. the month it was made.
        #[arg(long)]
        id: String,
    },
}
