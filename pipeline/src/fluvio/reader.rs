//! Reading a partition: one open Fluvio stream per partition, kept between fetches while each
//! fetch continues where the last one ended, with every offset checked.
//!
//! The 0.50.1 consumer can silently skip a whole producer batch where a fetch of
//! `max_bytes` ends. So a reader expects exactly `next`, drops what is below it (a re-seek may
//! resend), and on a gap (`offset > next`) throws the stream away and opens a new one at
//! `next`. A skipped batch at the very end of the log shows no later record to reveal the
//! gap, so a wait that ends empty compares `next` with the partition's end offset; when records
//! exist that the stream did not deliver, it waits a moment more (they may be in flight: a new
//! stream answers after a round trip, even for a zero wait), then re-seeks.
//!
//! It is not: a consumer group. Where a group is, is `super::offsets`' business.

use super::{envelope, transient};
use crate::topic::{ConsumerRecord, Offset, Partition};
use crate::{Error, Result};
use ::fluvio::consumer::{ConsumerConfigExt, ConsumerStream, OffsetManagementStrategy, Record, RetryMode};
use ::fluvio::{Fluvio, Isolation};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long a read waits for records that exist before it re-seeks (and again after).
const STALL_WAIT: Duration = Duration::from_secs(1);

pub(super) type Stream = Pin<Box<dyn ConsumerStream + Send>>;

/// Opens a stream on `topic`/`partition` at `from`; with `group`, one that can commit that
/// group's offset (manual strategy).
pub(super) async fn open(
    fluvio: &Fluvio,
    topic: &str,
    partition: Partition,
    from: Offset,
    max_bytes: i32,
    group: Option<&str>,
) -> Result<Stream> {
    let start = i64::try_from(from).map_err(|_| Error::Fatal(format!("offset {from} out of range")))?;
    let mut builder = ConsumerConfigExt::builder();
    builder
        .topic(topic)
        .partition(partition)
        .offset_start(::fluvio::Offset::absolute(start).map_err(|e| Error::Fatal(e.to_string()))?)
        .max_bytes(max_bytes)
        .isolation(Isolation::ReadCommitted)
        // Herald re-opens streams itself, from the offset it expects; a client-side retry
        // would hide the failure from the health report.
        .retry_mode(RetryMode::Disabled);
    if let Some(group) = group {
        builder.offset_consumer(group).offset_strategy(OffsetManagementStrategy::Manual);
    }
    let config = builder.build().map_err(|e| Error::Fatal(format!("fluvio consumer config: {e}")))?;
    let stream = fluvio.consumer_with_config(config).await.map_err(|e| transient("opening a stream", e))?;
    Ok(Box::pin(stream))
}

struct Cursor {
    stream: Stream,
    /// The offset the stream must yield next.
    next: Offset,
}

/// The open streams of one process, by (Fluvio topic, partition).
pub(super) struct Readers {
    max_bytes: i32,
    cursors: Mutex<HashMap<(String, Partition), Cursor>>,
    /// Times a gap made a reader re-seek (the client fault above).
    reseeks: AtomicU64,
}

impl Readers {
    pub(super) fn new(max_bytes: i32) -> Self {
        Self { max_bytes, cursors: Mutex::new(HashMap::new()), reseeks: AtomicU64::new(0) }
    }

    pub(super) fn clear(&self) {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Gaps seen so far.
    pub(super) fn reseeks(&self) -> u64 {
        self.reseeks.load(Ordering::Relaxed)
    }

    /// Up to `max_records` records from `from` on, contiguous; waits up to `max_wait` for the
    /// first. `end` reads the partition's end offset (only called after an idle wait).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch<F, E>(
        &self,
        fluvio: &Fluvio,
        topic: &str,
        partition: Partition,
        from: Offset,
        max_records: usize,
        max_wait: Duration,
        end: E,
    ) -> Result<Vec<ConsumerRecord>>
    where
        E: Fn() -> F,
        F: Future<Output = Result<Offset>>,
    {
        let key = (topic.to_string(), partition);
        // Taken out while in use: two callers on one partition each get their own stream.
        let taken = self.cursors.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let mut cursor = match taken {
            Some(c) if c.next == from => c,
            _ => Cursor { stream: open(fluvio, topic, partition, from, self.max_bytes, None).await?, next: from },
        };
        let mut deadline = tokio::time::Instant::now() + max_wait;
        let mut stalls = 0;
        let mut out = Vec::new();
        while out.len() < max_records.max(1) {
            let item = if out.is_empty() {
                match tokio::time::timeout_at(deadline, cursor.stream.next()).await {
                    Ok(item) => item,
                    // Nothing came, but records exist from `next` on: they are on their way
                    // (a stream answers after a round trip, even when `max_wait` is zero) or
                    // the stream skipped them. Wait a moment, then re-seek, then give up
                    // until the next call.
                    Err(_) if stalls < 2 && end().await? > cursor.next => {
                        if stalls == 1 {
                            self.reseek(fluvio, topic, partition, &mut cursor).await?;
                        }
                        stalls += 1;
                        deadline = tokio::time::Instant::now() + STALL_WAIT;
                        continue;
                    }
                    Err(_) => break,
                }
            } else {
                match cursor.stream.next().now_or_never() {
                    Some(item) => item,
                    None => break,
                }
            };
            let record = match item {
                Some(Ok(record)) => record,
                Some(Err(code)) => return Err(transient(&format!("reading {topic}/{partition}"), code)),
                None => return Err(transient(&format!("reading {topic}/{partition}"), "the stream ended")),
            };
            let offset = u64::try_from(record.offset()).map_err(|_| Error::Fatal("a negative offset".into()))?;
            if offset < cursor.next {
                continue;
            }
            if offset > cursor.next {
                tracing::warn!(
                    topic,
                    partition,
                    expected = cursor.next,
                    got = offset,
                    "fluvio skipped records; re-seeking"
                );
                self.reseek(fluvio, topic, partition, &mut cursor).await?;
                if !out.is_empty() {
                    break;
                }
                continue;
            }
            out.push(decode(partition, offset, &record)?);
            cursor.next = offset + 1;
        }
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).insert(key, cursor);
        Ok(out)
    }

    async fn reseek(&self, fluvio: &Fluvio, topic: &str, partition: Partition, cursor: &mut Cursor) -> Result<()> {
        self.reseeks.fetch_add(1, Ordering::Relaxed);
        cursor.stream = open(fluvio, topic, partition, cursor.next, self.max_bytes, None).await?;
        Ok(())
    }
}

fn decode(partition: Partition, offset: Offset, record: &Record) -> Result<ConsumerRecord> {
    let key = record.key().ok_or_else(|| Error::Fatal(format!("record {offset} has no key")))?;
    let (_, key) = envelope::split_key(key)?;
    let (headers, value) = envelope::decode_value(record.value())?;
    Ok(ConsumerRecord { partition, offset, key, headers, value })
}
