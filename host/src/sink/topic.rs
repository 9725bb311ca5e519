//! Closed sessions to a Kafka topic, so services downstream can react to a
//! session within a checkpoint interval: one record per session, keyed by
//! uuid, its value the table's row as JSON (attributes included), headers
//! naming the checkpoint and the rules. Dead letters can go to a topic of
//! their own.
//!
//! Delivery is tied to the checkpoint: a checkpoint's records are produced
//! and acknowledged (idempotent producer, `acks=all`) after its state is
//! durable and before its table commit, so a crash in between produces them
//! again on recovery. That is at least once: a repeat carries the same
//! `session_id` and the same content, for consumers to drop.

use std::time::{Duration, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde_json::{json, Value};

use super::iceberg::user_hash_bucket_of;
use super::{attribute_json, RejectedEvent, SessionRow, SinkError};

/// Header: the checkpoint that published the record.
pub const CHECKPOINT_HEADER: &str = "sessionize.checkpoint-id";
/// Header: the rules that cut the session.
pub const RULES_HEADER: &str = "sessionize.rule-version";

/// Where sessions (and dead letters) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Bootstrap servers.
    pub servers: String,
    /// The sessions' topic.
    pub sessions: String,
    /// The dead letters' topic, if they go to one.
    pub dead_letters: Option<String>,
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn create_topic(servers: &str, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", servers).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// A producer to the sessions' topic (see the module docs).
pub struct SessionsTopic {
    producer: FutureProducer,
    config: TopicConfig,
}

/// What a checkpoint publishes to the topics.
pub struct TopicBatch<'a> {
    /// Each engine's sessions closed and dead letters.
    pub outputs: Vec<(&'a [SessionRow], &'a [RejectedEvent])>,
    /// The checkpoint's id.
    pub checkpoint: u64,
    /// The rules in force.
    pub rule_version: &'a str,
}

impl SessionsTopic {
    /// A producer for `config`'s topics; creates them (one partition each)
    /// unless they exist.
    pub async fn connect(config: TopicConfig) -> Result<Self, SinkError> {
        for topic in std::iter::once(&config.sessions).chain(&config.dead_letters) {
            create_topic(&config.servers, topic, 1).await.map_err(|e| topic_error(topic, &e))?;
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| topic_error(&config.sessions, &e))?;
        tracing::info!(
            topic = config.sessions,
            dead_letters = config.dead_letters.as_deref().unwrap_or("(the table, if any)"),
            "sessions go to a Kafka topic at least once: a checkpoint's records are acknowledged \
             before its table commit, and a recovery may send them again (same session_id, same \
             content)"
        );
        Ok(Self { producer, config })
    }

    /// Produces `batch` and waits until the broker acknowledged every record.
    pub async fn publish(&self, batch: &TopicBatch<'_>) -> Result<(), SinkError> {
        let checkpoint = batch.checkpoint.to_string();
        let headers = || {
            OwnedHeaders::new()
                .insert(Header { key: CHECKPOINT_HEADER, value: Some(checkpoint.as_str()) })
                .insert(Header { key: RULES_HEADER, value: Some(batch.rule_version) })
        };
        let mut pending = Vec::new();
        let topic = &self.config.sessions;
        for row in batch.outputs.iter().flat_map(|(sessions, _)| sessions.iter()) {
            let value = session_value(row).to_string();
            let record = FutureRecord::to(topic).key(row.uuid.as_str()).payload(&value);
            self.send(topic, record.headers(headers()), &mut pending).await?;
        }
        if let Some(topic) = &self.config.dead_letters {
            for dead in batch.outputs.iter().flat_map(|(_, rejected)| rejected.iter()) {
                let value = dead_letter_value(dead).to_string();
                let record = FutureRecord::to(topic).key(dead.source.as_str()).payload(&value);
                self.send(topic, record.headers(headers()), &mut pending).await?;
            }
        }
        // Every record queued first, then one wait for all acknowledgements.
        await_all(&self.config.sessions, pending).await
    }

    /// Queues `record`; while the producer's queue is full, waits for what
    /// is queued to be acknowledged.
    async fn send(
        &self,
        topic: &str,
        record: FutureRecord<'_, str, String>,
        pending: &mut Vec<DeliveryFuture>,
    ) -> Result<(), SinkError> {
        let mut record = record;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Room comes as what is queued is acknowledged.
                    let queued = std::mem::take(pending);
                    if queued.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    await_all(topic, queued).await?;
                    record = back;
                }
                Err((error, _)) => return Err(topic_error(topic, &error)),
            }
        }
    }
}

async fn await_all(topic: &str, pending: Vec<DeliveryFuture>) -> Result<(), SinkError> {
    for delivery in futures::future::join_all(pending).await {
        match delivery {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(topic_error(topic, &error)),
            Err(_) => {
                return Err(SinkError::Topic {
                    topic: topic.to_owned(),
                    message: "the producer went away before the broker answered".into(),
                })
            }
        }
    }
    Ok(())
}

fn topic_error(topic: &str, error: &KafkaError) -> SinkError {
    SinkError::Topic { topic: topic.to_owned(), message: error.to_string() }
}

/// The table's row as JSON, under the table's column names; the rules'
/// attributes are columns of their own.
pub fn session_value(row: &SessionRow) -> Value {
    // Checked to be within the table's years before it is published.
    let start = UNIX_EPOCH + Duration::from_millis(u64::try_from(row.start_ms).unwrap_or(0));
    let start = humantime::format_rfc3339_millis(start).to_string();
    let mut value = json!({
        "uuid": row.uuid,
        "session_id": row.session_id,
        "session_start_time_ms": row.start_ms,
        "session_end_time_ms": row.end_ms,
        "session_duration_seconds": row.end_ms.saturating_sub(row.start_ms) as f64 / 1000.0,
        "event_count": row.event_count,
        "pages_visited": row.pages.iter().map(|p| &**p).collect::<Vec<&str>>(),
        "session_date": start.get(..10),
        "user_hash_bucket": user_hash_bucket_of(&row.uuid).ok(),
        "end_reason": row.end_reason,
        "rule_version": &*row.rule_version,
        "session_start_time": start,
    });
    if let Value::Object(fields) = &mut value {
        for (name, attribute) in &row.attributes {
            fields.insert(name.to_string(), attribute_json(attribute));
        }
    }
    value
}

/// A dead letter as JSON, under the dead-letter table's column names.
fn dead_letter_value(dead: &RejectedEvent) -> Value {
    json!({
        "raw": dead.raw,
        "reason": dead.reason,
        "source": dead.source,
        "partition": dead.partition,
        "position": dead.position,
    })
}
