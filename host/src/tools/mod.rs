//! Tools around the pipeline: test data (`sessionize generate`) and a producer
//! that fills a Kafka topic (`sessionize produce`).

pub mod generate;
pub mod produce;
