//! Tools around the pipeline: a producer that fills a Kafka topic
//! (`sessionize produce`), a topic re-keyed by uuid (`sessionize
//! repartition`), the dry run of rules over a file (`sessionize plugin
//! test`), a new plugin project (`plugin new`), and the question a container
//! runtime asks a job (`healthcheck`).

pub mod distribution;
pub mod healthcheck;
pub mod plugin_test;
pub mod produce;
pub mod repartition;
pub mod scaffold;
