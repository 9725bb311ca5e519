//! `sessionize repartition`: a topic whose producers do not key by uuid,
//! written again keyed by uuid (Kafka Streams' repartition topic), so that a
//! user's events share one partition and the job's per-partition state and
//! watermarks hold.
//!
//! At least once: records are produced, flushed, and only then their offsets
//! committed, so a crash sends the records since the last commit again. The
//! job downstream counts a repeated event (same user and `event_id`) once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;

use super::produce::{kafka, producer, send, ProduceError};
use crate::event;

/// Where to read and write.
#[derive(Debug, Clone)]
pub struct Repartition {
    /// Kafka bootstrap servers.
    pub servers: String,
    /// The topic as produced.
    pub from: String,
    /// The topic keyed by uuid (created with `partitions` if missing).
    pub to: String,
    /// The consumer group of the repartition step (instances share the work).
    pub group: String,
    /// How often records are flushed and their offsets committed.
    pub commit_every: Duration,
}

/// What a repartition run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repartitioned {
    /// Records written keyed by their uuid.
    pub keyed: u64,
    /// Records that have no uuid to key by (malformed): written unkeyed, for
    /// the job to put in its dead-letter table.
    pub unkeyed: u64,
}

/// Copies `from` to `to` keyed by uuid until `stop` is set; then flushes
/// and commits what it read.
pub fn repartition(config: &Repartition, stop: &AtomicBool) -> Result<Repartitioned, ProduceError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.servers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .map_err(kafka("consumer"))?;
    consumer.subscribe(&[&config.from]).map_err(kafka("subscribe"))?;
    let producer = producer(&config.servers)?;
    let mut done = Repartitioned::default();
    // Next offset per partition read since the last commit.
    let mut read: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(error)) => tracing::warn!(%error, "Kafka poll failed; retrying"),
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                let uuid = event::parse(payload).ok().map(|e| e.uuid.into_owned());
                let mut record: BaseRecord<'_, str, [u8]> =
                    BaseRecord::to(&config.to).payload(payload);
                match &uuid {
                    Some(uuid) => {
                        record = record.key(uuid.as_str());
                        done.keyed += 1;
                    }
                    None => done.unkeyed += 1,
                }
                send(&producer, record)?;
                read.insert(message.partition(), message.offset() + 1);
            }
        }
        if last_commit.elapsed() >= config.commit_every {
            commit(&consumer, &producer, &config.from, &mut read)?;
            last_commit = Instant::now();
        }
    }
    commit(&consumer, &producer, &config.from, &mut read)?;
    Ok(done)
}

/// Flushes what was produced, then commits the offsets read: never the
/// other way round, or a crash between them would lose records.
fn commit(
    consumer: &BaseConsumer,
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    read: &mut BTreeMap<i32, i64>,
) -> Result<(), ProduceError> {
    if read.is_empty() {
        return Ok(());
    }
    producer.flush(Duration::from_secs(60)).map_err(kafka("flush"))?;
    let mut offsets = TopicPartitionList::new();
    for (&partition, &next) in read.iter() {
        offsets
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(next))
            .map_err(kafka("offsets"))?;
    }
    read.clear();
    if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
        // A partition moved to another instance meanwhile: that one reads
        // it again from the last commit, and the job counts repeats once.
        tracing::warn!(%error, "committing offsets failed; records since the last commit are sent again");
    }
    Ok(())
}
