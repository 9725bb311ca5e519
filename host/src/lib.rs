//! Sessionize: groups clickstream events into user sessions with rules that run
//! as a WebAssembly component, and writes the sessions to Apache Iceberg.

pub mod admin;
pub mod checkpoint;
pub mod engine;
pub mod event;
pub mod generate;
pub mod output;
pub mod pipeline;
pub mod plugin;
pub mod produce;
pub mod sink;
pub mod source;
pub mod state;
pub mod streaming;
pub mod text;
