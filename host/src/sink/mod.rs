//! Where finished sessions and rejected events go.

pub mod iceberg;
