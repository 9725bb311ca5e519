//! The heart of Sessionize, with no wasmtime, Kafka or Iceberg in it: parsing
//! and validating events ([`event`]), the sessionization engine ([`engine`]),
//! the rules contract as the engine calls it ([`rules`]), and the rows the
//! engine produces for a sink ([`rows`]). The `sessionize` crate wires these
//! to sources, a WebAssembly runtime, state, checkpoints and Iceberg.

pub mod engine;
pub mod event;
pub mod rows;
pub mod rules;
