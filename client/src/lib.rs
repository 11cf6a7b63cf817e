//! `suppressd-client`: the Rust client of suppressd, for sending services that must ask "may this
//! notice go to this person on this channel, now?" before every send, and record opt-outs.
//!
//! What it adds to the generated gRPC client:
//! - [`ClientConfig`]: TLS (a private CA or the public roots), mTLS (a client certificate), and an
//!   API key sent as `authorization: Bearer …` and never printed (its `Debug` redacts it).
//! - [`Client::decide`] and [`Client::decide_batch`]: a [`Decision`] whose only way to say "send" is
//!   an `OK` answer with `suppressed = false`. Every error, timeout or unexpected answer is "do not
//!   send", with the reason, so a sender cannot fail open by forgetting an error path. A check
//!   answer carrying a field this client does not know (a newer server) is not an answer either
//!   (`strict`).
//! - Default deadlines per call, and retries with exponential backoff and full jitter only where a
//!   retry cannot do harm: `UNAVAILABLE` and `RESOURCE_EXHAUSTED` (waiting at least what the server's
//!   `RetryInfo` asks), and for `OptOut` only with an idempotency key, which [`Client::opt_out`]
//!   generates when the request has none ([`retry`]).
//! - [`Client::check_batch`]: any number of checks, split into calls of 1,000 (the server's limit),
//!   answered in the order given.
//! - [`ErrorDetails`](tonic_types::ErrorDetails) of a failure (`ErrorInfo.reason`, `RetryInfo`,
//!   `BadRequest`) through [`ClientError::details`].
//!
//! Why its own code generation rather than a dependency on the `suppressd` crate: that crate is the
//! whole server (Redis, sqlx, OpenTelemetry, the audit log), and a sending service should not compile
//! or link any of it to make a call. `build.rs` compiles the same `proto/suppress/v1` contract with
//! the same pure-Rust protox the server uses, client half only, so the two cannot drift apart inside
//! this workspace; the dependencies are tonic, prost and tonic-types.

#![forbid(unsafe_code)]

mod client;
mod config;
mod decision;
mod error;
pub mod retry;
mod strict;

/// The generated `suppress.v1` messages and the raw gRPC client, for RPCs this crate does not wrap.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("suppress.v1");
}

pub use client::{BATCH_LIMIT, Client, RawClient};
pub use config::{Bearer, ClientConfig, Deadlines};
pub use decision::{Decision, DoNotSend};
pub use error::ClientError;
pub use tonic_types::{ErrorDetails, StatusExt};
