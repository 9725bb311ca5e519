//! Tools around the pipeline: test data (`sessionize generate`), a producer
//! that fills a Kafka topic (`sessionize produce`), and the dry run of rules
//! over a file (`sessionize plugin test`).

pub mod generate;
pub mod plugin_test;
pub mod produce;
