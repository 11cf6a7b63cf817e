//! suppressd answers "may this notice go to this person on this channel, now?" and records the
//! opt-outs that decide it.
//!
//! The modules, from the outside in (dependencies point inward):
//! - [`api`]: the tonic services; validate → convert → call [`service`] → convert back.
//! - [`http`]: the public HTTP front (unsubscribe pages, RFC 8058 one-click) over the same use case.
//! - [`auth`]: principals, roles, the key file, opt-out tokens; decides who may do what.
//! - [`service`]: the use cases (check, opt out, receipts) over the cache and the store.
//! - [`cache`]: Redis: the complete set of active suppressions, the write-behind stream, the marker
//!   that says the set is complete.
//! - [`store`]: the durable store (PostgreSQL or SQLite) and its migrations.
//! - [`worker`]: the write-behind worker that moves the stream into the store.
//! - [`domain`]: recipients, scopes, records; no I/O.
//! - [`audit`]: the tamper-evident log: entries, RFC 9162 Merkle tree, signed checkpoints, checks.
//! - [`config`], [`startup`], [`telemetry`]: how a process is configured, assembled and observed;
//!   [`admin`] serves its metrics.
//! - [`cli`]: the operator and client commands of the binary.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;

/// The generated protobuf types and tonic stubs of `proto/suppress/v1`.
pub mod proto {
    tonic::include_proto!("suppress.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/suppress_descriptor.bin"));
}
