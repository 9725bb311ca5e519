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
//! tools: `sessionize generate` and `sessionize produce`
//! ```
//!
//! See ARCHITECTURE.md at the repository root for the whole picture.

pub mod admin;
pub mod checkpoint;
pub mod engine;
pub mod event;
pub mod job;
pub mod rules;
pub mod sink;
pub mod source;
pub mod state;
pub mod tools;
