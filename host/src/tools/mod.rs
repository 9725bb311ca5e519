//! Tools around the pipeline: a producer that fills a Kafka topic
//! (`sessionize produce`), a topic re-keyed by uuid (`sessionize
//! repartition`), the dry run of rules over a file (`sessionize plugin
//! test`), and a new plugin project (`plugin new`).

pub mod distribution;
pub mod plugin_test;
pub mod produce;
pub mod repartition;
pub mod scaffold;
