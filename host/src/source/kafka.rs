//! Kafka input: every partition of one topic, read from offsets the job keeps
//! itself (never auto-committed), committed to the consumer group after each
//! checkpoint so standard lag tools see progress.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Rebalanced, StreamSource};
use crate::event::EventBlock;

/// Why Kafka input failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The client could not be created (bad configuration).
    #[error("cannot create a Kafka consumer for {servers}: {source}")]
    Client {
        /// Bootstrap servers.
        servers: String,
        /// The client's error.
        source: KafkaError,
    },
    /// The topic does not exist or has no partitions.
    #[error("topic {topic} not found on {servers} (waited {waited:?}): create it, or check --kafka-topic and --kafka-servers")]
    NoTopic {
        /// The topic.
        topic: String,
        /// Bootstrap servers.
        servers: String,
        /// How long metadata was awaited.
        waited: Duration,
    },
    /// A Kafka call failed.
    #[error("Kafka {what}: {source}")]
    Kafka {
        /// What was attempted.
        what: &'static str,
        /// The client's error.
        source: KafkaError,
    },
}

/// Kafka connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub servers: String,
    /// The topic.
    pub topic: String,
    /// Consumer group offsets are committed to.
    pub group: String,
}

/// The client's context: keeps each partition's bounds from librdkafka's
/// statistics (emitted once a second while polling), for the lag, and a
/// group member's rebalances until the run takes them.
struct SourceContext {
    topic: String,
    /// `(low, high)` offsets per partition.
    bounds: Mutex<BTreeMap<i32, (i64, i64)>>,
    /// What the group's rebalances did since the run last asked.
    rebalances: Mutex<Vec<Rebalanced>>,
}

fn topic_partitions(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut partitions: Vec<i32> =
        list.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect();
    partitions.sort_unstable();
    partitions
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut bounds = self.bounds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (&partition, stats) in &topic.partitions {
            // librdkafka reports -1 for bounds it does not know yet.
            if partition >= 0 && stats.hi_offset >= 0 {
                bounds.insert(partition, (stats.lo_offset.max(0), stats.hi_offset));
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    /// A group member's assignment changed (librdkafka has applied it).
    /// Partitions it gets are paused until the run has claimed them and
    /// knows where to read from.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let change = match rebalance {
            Rebalance::Assign(list) => {
                if let Err(error) = consumer.pause(list) {
                    tracing::warn!(%error, "pausing newly assigned partitions failed");
                }
                Rebalanced::Assigned(topic_partitions(list, &self.topic))
            }
            Rebalance::Revoke(list) => Rebalanced::Revoked(topic_partitions(list, &self.topic)),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "consumer group rebalance failed");
                return;
            }
        };
        tracing::info!(?change, "consumer group rebalanced");
        self.rebalances.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(change);
    }
}

/// A consumer of every partition of one topic.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    config: KafkaConfig,
    partitions: Vec<i32>,
    /// Next offset to read, per partition.
    positions: BTreeMap<i32, i64>,
    last_error: Option<Instant>,
}

impl KafkaSource {
    /// Connects, waits up to `wait` for the topic's metadata, and assigns every
    /// partition at `start` (partitions missing from it start at the beginning).
    pub fn connect(
        config: &KafkaConfig,
        start: &BTreeMap<i32, i64>,
        wait: Duration,
    ) -> Result<Self, KafkaSourceError> {
        let consumer = client(config, None)?;
        let partitions = topic_partitions_of(&consumer, config, wait)?;
        let mut assignment = TopicPartitionList::new();
        let mut positions = BTreeMap::new();
        for &p in &partitions {
            let offset = match start.get(&p) {
                Some(&o) => {
                    positions.insert(p, o);
                    Offset::Offset(o)
                }
                None => Offset::Beginning,
            };
            assignment
                .add_partition_offset(&config.topic, p, offset)
                .map_err(|source| KafkaSourceError::Kafka { what: "assign", source })?;
        }
        consumer
            .assign(&assignment)
            .map_err(|source| KafkaSourceError::Kafka { what: "assign", source })?;
        tracing::info!(topic = config.topic, ?partitions, ?start, "consuming");
        Ok(Self { consumer, config: config.clone(), partitions, positions, last_error: None })
    }

    /// Joins the consumer group `config.group` as one of its members: the
    /// group assigns partitions (cooperative-sticky, so a rebalance moves
    /// only what must move), each reported by [`StreamSource::take_rebalance`]
    /// and read once [`StreamSource::start_at`] says where from. A member
    /// silent for `session_timeout` loses its partitions to the others.
    pub fn join(
        config: &KafkaConfig,
        wait: Duration,
        session_timeout: Duration,
    ) -> Result<Self, KafkaSourceError> {
        let consumer = client(config, Some(session_timeout))?;
        topic_partitions_of(&consumer, config, wait)?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|source| KafkaSourceError::Kafka { what: "subscribe", source })?;
        tracing::info!(topic = config.topic, group = config.group, "joined the consumer group");
        Ok(Self {
            consumer,
            config: config.clone(),
            partitions: Vec::new(),
            positions: BTreeMap::new(),
            last_error: None,
        })
    }
}

/// A consumer of `config`; a group member's when `session_timeout` is given.
fn client(
    config: &KafkaConfig,
    session_timeout: Option<Duration>,
) -> Result<BaseConsumer<SourceContext>, KafkaSourceError> {
    let context = SourceContext {
        topic: config.topic.clone(),
        bounds: Mutex::default(),
        rebalances: Mutex::default(),
    };
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.servers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Reconnect quickly after a broker outage.
        .set("reconnect.backoff.max.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        // Partition bounds for the lag metric.
        .set("statistics.interval.ms", "1000");
    if let Some(timeout) = session_timeout {
        let ms = timeout.as_millis().max(1);
        client
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", ms.to_string())
            .set("heartbeat.interval.ms", (ms / 3).max(1).to_string())
            // Also the rebalance timeout: how long a rebalance waits for a
            // member that stopped answering without leaving (frozen, cut
            // off). The default five minutes would stall the group as long.
            .set("max.poll.interval.ms", (ms * 5).max(30_000).to_string());
    }
    client
        .create_with_context(context)
        .map_err(|source| KafkaSourceError::Client { servers: config.servers.clone(), source })
}

/// The topic's partitions, waiting up to `wait` for its metadata.
fn topic_partitions_of(
    consumer: &BaseConsumer<SourceContext>,
    config: &KafkaConfig,
    wait: Duration,
) -> Result<Vec<i32>, KafkaSourceError> {
    let started = Instant::now();
    let partitions = loop {
        let found = consumer
            .fetch_metadata(Some(&config.topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == config.topic)
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            })
            .filter(|p| !p.is_empty());
        match found {
            Some(mut p) => {
                p.sort_unstable();
                break p;
            }
            None if started.elapsed() < wait => std::thread::sleep(Duration::from_millis(500)),
            None => {
                return Err(KafkaSourceError::NoTopic {
                    topic: config.topic.clone(),
                    servers: config.servers.clone(),
                    waited: started.elapsed(),
                })
            }
        }
    };
    Ok(partitions)
}

impl KafkaSource {
    fn partition_list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition(&self.config.topic, p);
        }
        list
    }
}

impl StreamSource for KafkaSource {
    type Error = KafkaSourceError;

    fn name(&self) -> String {
        format!("kafka:{}", self.config.topic)
    }

    /// The topic's partitions.
    fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Next offset to read per partition (only partitions read from so far, or
    /// given at start).
    fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// Polls up to `max` messages into `block`, waiting at most `timeout` for the
    /// first. Returns how many were added. Broker errors are logged, not fatal:
    /// the client reconnects by itself.
    fn poll_into(&mut self, block: &mut EventBlock, max: usize, timeout: Duration) -> usize {
        let mut added = 0;
        let mut wait = timeout;
        while added < max {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    block.push(partition, offset, message.payload().unwrap_or_default());
                    self.positions.insert(partition, offset + 1);
                    added += 1;
                    wait = Duration::ZERO;
                }
                Some(Err(error)) => {
                    // Log at most once a second: an outage produces a flood.
                    if self.last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        tracing::warn!(%error, "Kafka poll failed; retrying");
                        self.last_error = Some(Instant::now());
                    }
                    break;
                }
            }
        }
        added
    }

    /// The end of each partition now (its high watermark): what `--test-mode`
    /// reads up to.
    fn end_offsets(&self, timeout: Duration) -> Result<BTreeMap<i32, i64>, KafkaSourceError> {
        let mut ends = BTreeMap::new();
        for &p in &self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.config.topic, p, timeout)
                .map_err(|source| KafkaSourceError::Kafka { what: "fetch watermarks", source })?;
            ends.insert(p, high);
        }
        Ok(ends)
    }

    /// Pauses fetching `partitions`. librdkafka drops what it prefetched for
    /// them and, on resume, fetches from the next offset not yet delivered.
    fn pause(&mut self, partitions: &[i32]) -> Result<(), KafkaSourceError> {
        let list = self.partition_list(partitions);
        self.consumer
            .pause(&list)
            .map_err(|source| KafkaSourceError::Kafka { what: "pause", source })
    }

    fn resume(&mut self, partitions: &[i32]) -> Result<(), KafkaSourceError> {
        let list = self.partition_list(partitions);
        self.consumer
            .resume(&list)
            .map_err(|source| KafkaSourceError::Kafka { what: "resume", source })
    }

    fn take_rebalance(&mut self) -> Vec<Rebalanced> {
        let context = self.consumer.context();
        let mut queued =
            context.rebalances.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changes = std::mem::take(&mut *queued);
        drop(queued);
        for change in &changes {
            match change {
                Rebalanced::Assigned(added) => self.partitions.extend(added),
                Rebalanced::Revoked(gone) => self.partitions.retain(|p| !gone.contains(p)),
            }
        }
        self.partitions.sort_unstable();
        self.partitions.dedup();
        changes
    }

    /// Reads `partition` (paused since it was assigned) from `offset`, or
    /// from its beginning.
    fn start_at(&mut self, partition: i32, offset: Option<i64>) -> Result<(), KafkaSourceError> {
        let at = offset.map_or(Offset::Beginning, Offset::Offset);
        self.consumer
            .seek(&self.config.topic, partition, at, Duration::from_secs(10))
            .map_err(|source| KafkaSourceError::Kafka { what: "seek", source })?;
        if let Some(o) = offset {
            self.positions.insert(partition, o);
        }
        self.resume(&[partition])
    }

    fn lags(&self) -> BTreeMap<i32, i64> {
        let bounds = self.consumer.context().bounds.lock();
        let bounds = bounds.unwrap_or_else(std::sync::PoisonError::into_inner);
        bounds
            .iter()
            .map(|(&p, &(low, high))| {
                let next = self.positions.get(&p).copied().unwrap_or(low);
                (p, (high - next).max(0))
            })
            .collect()
    }

    /// Commits `offsets` (next offsets to read) to the consumer group. Only for
    /// monitoring: the job resumes from its own checkpoint, so a failure here
    /// is logged and the next checkpoint tries again.
    fn commit_consumed(&mut self, offsets: &BTreeMap<i32, i64>) {
        let mut list = TopicPartitionList::new();
        // A group member commits only what it still holds.
        for (&p, &o) in offsets.iter().filter(|(p, _)| self.partitions.contains(p)) {
            if list.add_partition_offset(&self.config.topic, p, Offset::Offset(o)).is_err() {
                return;
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(%error, "committing offsets to the consumer group failed");
        }
    }
}
