//! Sessionize: groups clickstream events into user sessions with rules that run
//! as a WebAssembly component, and writes the sessions to Apache Iceberg.
//!
//! The modules are the stages data flows through, `source -> event -> engine
//! -> rules -> sink`, with `state` and `checkpoint` beside them, `group` (a
//! consumer group's protocol), and `job`, which wires them. `event` and
//! `engine` live in the `sessionize-core` crate and are re-exported here.
//!
//! ARCHITECTURE.md at the repository root is the map: every module, what it
//! does, and how data moves between them.

pub use sessionize_core::{engine, event};

pub mod admin;
pub mod checkpoint;
pub mod clock;
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
