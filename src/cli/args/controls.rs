//! The arguments of the operator's commands (`halt`, `resume`, `mandatory`, `window`, `consent`,
//! The arguments of the operator's commands (`halt`, `resume`, `mandatory`, `window`, `trigger`,
//! `controls`): gRPC clients
//! of a running server, so they act through the same rules, roles and audit log as any caller.

use super::{ChannelArg, RecipientArgs, ScopeArgs, ServerArgs};
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
        /// Its notices go at any hour, whatever the send windows say (default: they wait for
        /// the windows like any other notice).
        #[arg(long)]
        ignore_send_windows: bool,
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
pub enum WindowCommand {
    /// Sets the hours a tenant's notices of a channel (and topic) may go, on the recipient's wall
    /// clock; replaces the window set before for the same tenant, channel and topic. Outside it a
    /// check answers suppressed with the next time the notice may go.
    Set {
        #[arg(long, default_value = "")]
        tenant: String,
        /// The channel (none = every channel).
        #[arg(long, value_enum)]
        channel: Option<ChannelArg>,
        /// The topic ("" = every topic).
        #[arg(long, default_value = "")]
        topic: String,
        /// Local time the window opens, HH:MM (24-hour), e.g. 08:00.
        #[arg(long)]
        start: String,
        /// Local time it closes (exclusive), HH:MM; earlier than --start = across midnight.
        #[arg(long)]
        end: String,
        /// The IANA time zone of checks that name none, e.g. America/New_York.
        #[arg(long)]
        time_zone: String,
        /// Why (recorded in the audit log), e.g. the rule it implements.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Removes a send window.
    Remove {
        window_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum DestinationCommand {
    /// Registers a webhook destination: every change it wants, committed from now on, is POSTed
    /// to the URL in audit log order, signed per Standard Webhooks. Prints its signing secret
    /// (once: listings never show it).
    Add {
        /// http:// or https://
        url: String,
        /// Only changes of this tenant (repeat for several; none = every tenant).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Only changes of this kind: opt_out, opt_in, expire, import, rollback, halt, … (repeat
        /// for several; none = every kind).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// The signing secret (`whsec_` + base64 of 24 to 64 bytes); unset = the server makes one.
        #[arg(long, env = "SUPPRESSD_DESTINATION_SECRET", default_value = "")]
        secret: String,
        /// Its deliveries carry the person's identifier (opened from the identifier vault, for
        /// opt-outs that kept it): for a system that keeps its own list by address.
        #[arg(long)]
        needs_identifier: bool,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Prints the destinations: how far each got, and whether it is parked.
    List {
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Stops deliveries to a destination (what it was delivered stays on record).
    Remove {
        destination_id: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Resumes a parked destination from the change it stopped at.
    Resume {
        destination_id: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Sets an automatic halt of a tenant's campaign (or topic): it halts when the opt-outs or
    /// complaints naming it within the window exceed a count, or a rate of its checks. Replaces
    /// the trigger set before for the same tenant, topic and campaign.
    Set {
        #[arg(long, default_value = "")]
        tenant: String,
        /// The topic ("" = every topic of the campaign).
        #[arg(long, default_value = "")]
        topic: String,
        /// The campaign ("" = every campaign of the topic).
        #[arg(long, default_value = "")]
        campaign: String,
        /// The sliding window: a number and a unit (s, m, h, d), at most a day, e.g. `10m`.
        #[arg(long)]
        window: String,
        /// Halt when the window's opt-outs (complaints included) exceed this many.
        #[arg(long, default_value_t = 0)]
        max_opt_outs: u64,
        /// Halt when the window's complaints exceed this many.
        #[arg(long, default_value_t = 0)]
        max_complaints: u64,
        /// Halt when opt-outs / checks in the window exceed this fraction, e.g. 0.02.
        #[arg(long, default_value_t = 0.0)]
        max_rate: f64,
        /// The checks a window must hold before --max-rate applies.
        #[arg(long, default_value_t = 0)]
        min_checks: u64,
        /// Why (recorded in the audit log and in the halts it makes).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Removes a halt trigger (the halts it made stay until resumed).
    Remove {
        trigger_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Prints a tenant's halt triggers in force (with --all, the removed ones too).
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ControlClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ControlsCommand {
    /// Prints a tenant's halts, declarations, send windows, consent requirements and halt triggers
    /// in force (with --all, the ended ones too).
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: ControlClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConsentCommand {
    /// Requires consent for a tenant's notices of a topic (on one channel, or every channel): a
    /// check then lets such a notice go only to a person with a recorded consent covering it (role
    /// admin).
    Require {
        #[arg(long, default_value = "")]
        tenant: String,
        /// The channel (none = every channel).
        #[arg(long, value_enum)]
        channel: Option<ChannelArg>,
        #[arg(long)]
        topic: String,
        /// Why (recorded in the audit log), e.g. the rule it implements.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Drops a consent requirement (role admin).
    Drop {
        requirement_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ControlClientArgs,
    },
    /// Records a person's consent to a scope, with its evidence (role write).
    Record(RecordConsentArgs),
}

#[derive(Args, Debug)]
pub struct RecordConsentArgs {
    #[command(flatten)]
    pub(crate) recipient: RecipientArgs,
    /// What the person consents to; unset channel, topic or campaign are wildcards.
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// Where the consent was given, e.g. signup-form.
    #[arg(long)]
    pub(crate) source: String,
    /// A reference or a hash of what the person agreed to (no personal data).
    #[arg(long)]
    pub(crate) proof: String,
    /// Who obtained it: a system or an agent.
    #[arg(long)]
    pub(crate) obtained_by: String,
    #[command(flatten)]
    pub(crate) server: ControlClientArgs,
}
