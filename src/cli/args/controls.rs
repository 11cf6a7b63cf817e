//! The arguments of the operator's commands (`halt`, `resume`, `mandatory`, `controls`): gRPC clients
//! of a running server, so they act through the same rules, roles and audit log as any caller.

use super::{ChannelArg, ServerArgs};
use clap::{Args, Subcommand};

/// How an operator command reaches a running server, and how it prints the answer.
#[derive(Args, Debug, Clone)]
pub struct ControlClientArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// Print the server's answer as JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub struct HaltArgs {
    #[arg(long, default_value = "")]
    pub(crate) tenant: String,
    /// The topic to halt ("" = every topic of the campaign).
    #[arg(long, default_value = "")]
    pub(crate) topic: String,
    /// The campaign to halt ("" = every campaign of the topic).
    #[arg(long, default_value = "")]
    pub(crate) campaign: String,
    /// Only these channels (repeatable; none = every channel).
    #[arg(long = "channel", value_enum)]
    pub(crate) channels: Vec<ChannelArg>,
    /// Why (recorded in the audit log and shown to senders).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) server: ControlClientArgs,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    pub(crate) halt_id: String,
    /// Why the halt ends (recorded in the audit log).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) server: ControlClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum MandatoryCommand {
    /// Declares a topic mandatory on some channels until an expiry.
    Declare {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        topic: String,
        /// The channels the declaration covers (repeatable; at least one).
        #[arg(long = "channel", value_enum, required = true)]
        channels: Vec<ChannelArg>,
        /// The law or obligation that requires the notice.
        #[arg(long)]
        legal_basis: String,
        /// Who approved the declaration.
        #[arg(long)]
        approver: String,
        /// How long it holds: a number and a unit (s, m, h, d), e.g. `30d`.
        #[arg(long)]
        expires_in: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Ends a declaration before its expiry.
    Revoke {
        declaration_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ControlsCommand {
    /// Prints a tenant's halts and declarations in force (with --all, the ended ones too).
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ControlClientArgs,
    },
}
