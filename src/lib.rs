//! suppressd answers "may this notice go to this person on this channel, now?" and records the
//! opt-outs that decide it.
//!
//! The modules, from the outside in. Dependencies point inward: a module imports only the ones
//! listed below it (`tests/api/layers.rs` holds the exact table and fails on an upward import).
//! - [`cli`]: the binary's command line (all of its grammar, [`cli::args`]) and its client and
//!   operator commands.
//! - [`startup`]: assembles a process from [`config`]: pools, listeners, the server, the worker.
//! - [`config`]: the settings of `serve`; loading them binds and connects to nothing.
//! - [`api`]: the tonic services; validate → convert → call [`service`] → convert back.
//! - `http`: the public HTTP front (unsubscribe pages, RFC 8058 one-click) over the same use case.
//! - `admin`: the admin HTTP port (Prometheus metrics).
//! - [`service`]: the use cases (check, opt out, receipts, controls, imports) over the cache and
//!   the store.
//! - [`worker`]: the write-behind worker that moves the stream into the store.
//! - [`cache`]: Redis: the complete set of active suppressions, the write-behind stream, the marker
//!   that says the set is complete. Nothing else speaks Redis.
//! - [`store`]: the durable store (PostgreSQL or SQLite) and its migrations. Nothing else speaks
//!   SQL. The cache and the store never import each other.
//! - [`auth`]: principals, roles, the key file, opt-out tokens; decides who may do what.
//! - [`audit`]: the tamper-evident log: entries, RFC 9162 Merkle tree, signed checkpoints, checks.
//! - [`telemetry`], [`domain`]: how a process is observed (with its own settings), and recipients,
//!   scopes, records (no I/O); every layer may use them.
//!
//! Public items are what another crate uses: the binary (`src/main.rs`), the integration tests
//! under `tests/`, the benchmark crate (`bench/`) and the fuzz targets (`fuzz/`), or what the
//! signatures of those items name. Everything else is `pub(crate)`.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub(crate) mod http;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;

/// The generated protobuf types and tonic stubs of `proto/suppress/v1`.
pub mod proto {
    tonic::include_proto!("suppress.v1");

    pub mod codec;
    pub mod details;

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/suppress_descriptor.bin"));
}
