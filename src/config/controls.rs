//! The arguments of the operator's commands (`halt`, `resume`, `mandatory`, `controls`): gRPC clients
//! of a running server, so they act through the same rules, roles and audit log as any caller.
//! Also the interval syntax of `serve --controls-poll`.

use super::{ChannelArg, ServerArgs};
use clap::{Args, Subcommand};
use std::time::Duration;

/// How an operator command reaches a running server, and how it prints the answer.
#[derive(Args, Debug, Clone)]
pub struct ControlClientArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct HaltArgs {
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// The topic to halt ("" = every topic of the campaign).
    #[arg(long, default_value = "")]
    pub topic: String,
    /// The campaign to halt ("" = every campaign of the topic).
    #[arg(long, default_value = "")]
    pub campaign: String,
    /// Only these channels (repeatable; none = every channel).
    #[arg(long = "channel", value_enum)]
    pub channels: Vec<ChannelArg>,
    /// Why (recorded in the audit log and shown to senders).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ControlClientArgs,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    pub halt_id: String,
    /// Why the halt ends (recorded in the audit log).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub server: ControlClientArgs,
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

/// `25ms`, `2s`: a short interval with its unit, at least 1 ms.
pub(super) fn parse_interval(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 25ms"))?;
    let interval = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return Err(format!("{text:?}: the unit must be ms or s")),
    };
    if interval.is_zero() {
        return Err("must be at least 1ms".into());
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_a_unit_and_are_not_zero() {
        assert_eq!(parse_interval("25ms"), Ok(Duration::from_millis(25)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        for bad in ["25", "0ms", "ms", "1m", "-1s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
