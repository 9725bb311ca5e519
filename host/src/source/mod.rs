//! Where records come from. A record is raw bytes plus where it was read, so a
//! rejected record can be traced back to its input.

pub mod file;
pub mod kafka;

/// One input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Input partition (0 for a file).
    pub partition: i32,
    /// Line number (1-based) or offset.
    pub position: i64,
    /// The raw bytes, without the line terminator.
    pub bytes: Vec<u8>,
}
