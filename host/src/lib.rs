//! Sessionize: groups clickstream events into user sessions with rules that run
//! as a WebAssembly component, and writes the sessions to Apache Iceberg.
//!
//! # Layout
//!
//! The modules are the stages data flows through, in order, and the job that
//! wires them:
//!
//! ```text
//! source ──> event ──> engine ──> rules ──> sink
//!  file,      parse,    clocks,    component,  Iceberg tables
//!  Kafka      validate  users,     native,
//!                       dispatch   lifecycle (hot swap)
//!                          │
//!                   state, checkpoint   (durable state, exactly-once protocol)
//!
//! job: the bounded run and the streaming run over those parts
//! admin: the endpoint (and its client) behind `sessionize plugin`
//! metrics, status: what a job reports, and the endpoint that serves it
//!   (`/metrics`, `/healthz`, `/readyz`, the status page)
//! tools: `sessionize generate` and `sessionize produce`
//! ```
//!
//! `event` and `engine` (with the rules contract and the rows a sink writes)
//! live in the `sessionize-core` crate, which builds and tests without
//! wasmtime, Kafka or Iceberg; they are re-exported here under their own names.
//!
//! See ARCHITECTURE.md at the repository root for the whole picture.

pub use sessionize_core::{engine, event};

pub mod admin;
pub mod checkpoint;
pub mod group;
pub mod job;
pub mod metrics;
#[cfg(feature = "query")]
pub mod query;
pub mod rules;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod tools;
