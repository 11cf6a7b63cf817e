//! Integration tests: the real server on port 0, through the generated client, against the shared
//! Redis (a key prefix per test) and real PostgreSQL and SQLite (a database per test).

#[macro_use]
mod helpers;
mod layers;

mod audit;
mod auth;

mod chaos;
mod checks;
mod cli_send;
mod client;
mod compat;
mod compose;
mod confirmations;
mod controls;
mod deadlines;
mod deploy;
mod examples;
mod failures;
mod import_cli;
mod imports;
mod inbound;
mod inbound_email;
mod inbound_ses;
mod kubernetes;
mod layout_change;
mod layout_drill;
mod lifecycle;
mod limits;
mod migrations;
mod near_cache;
mod one_click;
mod opt_outs;
mod probes;
mod processes;
mod rights;
mod rollbacks;
mod rolling;
mod telemetry;
mod tls;
mod tokens;
mod topology;
mod uncached;
mod validation;
mod vault;
mod watch;
mod webhooks;
mod wire;
mod worker;
