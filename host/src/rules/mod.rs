//! The rules stage: runs the session rules on the engine's batches.
//!
//! - [`contract`]: the contract's records in plain Rust, as the engine builds them.
//! - The runtime behind [`RulesRuntime`]: a sandboxed WebAssembly component
//!   ([`ComponentRules`], compiled by a [`ComponentLoader`], which may keep
//!   compiled components on disk (`compiled`); `wit` converts to the
//!   generated types, `sandbox` is what WASI grants), or rules compiled into the
//!   host (`sessionize_native::NativeRules`, for tests and the benchmark's baseline).
//! - [`lifecycle`]: which rules are in force, and how they change while a job
//!   runs: deploy requests, the compile queue, the swap at a checkpoint
//!   boundary, rollback, the archive of deployed components, resume on restart.

mod compiled;
mod component;
pub mod lifecycle;
mod sandbox;
mod wit;

pub use component::{ComponentLoader, ComponentRules, SandboxLimits};
use sessionize_core::rules::{check_result, TextsSent};
pub use sessionize_core::rules::{contract, RulesError, RulesRuntime, Texts};
