//! The arguments of `suppressd check` and `suppressd opt-out`: the two calls a sending service makes,
//! for a human at a terminal (support, on-call, a script), over the same client crate the services use.

use super::{ChannelArg, RecipientArgs, ScopeArgs, ServerArgs};
use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 when the notice may be sent (the server answered \
    suppressed = false); 1 when it must not: the person opted out, a halt, a send window or a \
    missing consent stops it (the answer says which); 3 when there was no usable answer (refused, \
    unavailable, timed out, cannot connect): do not send either; 2 for a usage error."
)]
pub struct SendCheckArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) recipient: RecipientArgs,
    #[arg(long, default_value = "")]
    pub(crate) tenant: String,
    #[arg(long, value_enum)]
    pub(crate) channel: ChannelArg,
    /// The notice's topic (e.g. recall, marketing).
    #[arg(long)]
    pub(crate) topic: String,
    /// The notice's campaign, if any (e.g. RC-2026-0042).
    #[arg(long, default_value = "")]
    pub(crate) campaign: String,
    /// The recipient's IANA time zone, for send windows.
    #[arg(long, default_value = "")]
    pub(crate) time_zone: String,
    /// Print the decision and the server's answer as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Exit status: 0 when the opt-out was recorded (state DURABLE, or \
    ACCEPTED: visible everywhere and queued for the store; `suppressd receipt get` follows it); \
    1 when it was not (refused, invalid, unavailable, timed out); 2 for a usage error. A retry with \
    the same --idempotency-key never records it twice."
)]
pub struct SendOptOutArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) recipient: RecipientArgs,
    /// What the person leaves: unset channel, topic and campaign are every one.
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    #[arg(long, value_enum, default_value = "user-request")]
    pub(crate) reason: ReasonArg,
    #[arg(long, value_enum, default_value = "support-agent")]
    pub(crate) source: SourceArg,
    /// The same key returns the first receipt (default: a fresh one, which makes retries safe).
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// Answer once visible and queued, without waiting for the store's commit.
    #[arg(long)]
    pub(crate) accepted: bool,
    /// Print the receipt as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `Reason` on the command line (`NO_CONSENT` is only ever an answer).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReasonArg {
    UserRequest,
    Complaint,
    Bounce,
    Legal,
    Operator,
}

/// `Source` on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceArg {
    Link,
    OneClick,
    SmsKeyword,
    SupportAgent,
    Api,
    Import,
    PreferenceSignal,
}
