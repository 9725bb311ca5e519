//! `sessionize produce`: clickstream into a Kafka topic, keyed by uuid so that a
//! user's events stay in one partition and in order.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::event;
use crate::sink::topic::create_topic;
use crate::source::file::{FileSource, FileSourceError};

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Kafka refused.
    #[error("Kafka {what}: {source}")]
    Kafka {
        /// What was attempted.
        what: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// The input could not be read.
    #[error(transparent)]
    Source(#[from] FileSourceError),
}

pub(crate) fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> ProduceError {
    move |source| ProduceError::Kafka { what, source }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(servers: &str, topic: &str, partitions: i32) -> Result<(), ProduceError> {
    create_topic(servers, topic, partitions).await.map_err(kafka("create topic"))
}

/// A producer that batches for throughput.
pub(crate) fn producer(
    servers: &str,
) -> Result<ThreadedProducer<DefaultProducerContext>, ProduceError> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "false")
        .create()
        .map_err(kafka("producer"))
}

/// Queues `record`, waiting while the producer's queue is full.
pub(crate) fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    record: BaseRecord<'_, str, [u8]>,
) -> Result<(), ProduceError> {
    let mut record = Some(record);
    while let Some(r) = record.take() {
        match producer.send(r) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                std::thread::sleep(Duration::from_millis(5));
                record = Some(r);
            }
            Err((error, _)) => return Err(kafka("produce")(error)),
        }
    }
    Ok(())
}

/// Sends every line of `source`, keyed by its uuid (malformed lines unkeyed:
/// they still go through, to exercise the job's dead-letter path). With
/// `pace`, waits so that event time advances with wall time. Returns lines sent.
pub fn produce(
    servers: &str,
    topic: &str,
    mut source: FileSource,
    pace: bool,
) -> Result<u64, ProduceError> {
    let producer = producer(servers)?;
    let mut line = Vec::with_capacity(1024);
    let mut sent = 0u64;
    let started = Instant::now();
    let mut first_event: Option<i64> = None;
    while source.next_line(&mut line, usize::MAX - 1)?.is_some() {
        let key = event::parse(&line).ok().map(|e| (e.uuid.into_owned(), e.timestamp_ms));
        if let (true, Some((_, t))) = (pace, &key) {
            let first = *first_event.get_or_insert(*t);
            let due = Duration::from_millis(u64::try_from(t - first).unwrap_or(0));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(&line);
        if let Some((uuid, _)) = &key {
            record = record.key(uuid.as_str());
        }
        send(&producer, record)?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(60)).map_err(kafka("flush"))?;
    Ok(sent)
}
