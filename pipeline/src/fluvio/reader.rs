//! Reading a partition: one open Fluvio stream per partition, kept between fetches while each
//! fetch continues where the last one ended, with every offset checked.
//!
//! The 0.50.1 consumer can silently skip a whole producer batch where a fetch of
//! `max_bytes` ends. So a reader expects exactly `next`, drops what is below it (a re-seek may
//! resend), and on a gap (`offset > next`) marks the stream stale, so the next fetch opens a
//! new one at `next`. A skipped batch at the very end of the log shows no later record to reveal the
//! gap, so a wait that ends empty compares `next` with the partition's end offset; when records
//! exist that the stream did not deliver, it waits a moment more (they may be in flight: a new
//! stream answers after a round trip, even for a zero wait), then re-seeks.
//!
//! It is not: a consumer group. Where a group is, is `super::offsets`' business.

use super::{envelope, transient};
use crate::topic::{ConsumerRecord, Offset, Partition};
use crate::{Error, Result};
use ::fluvio::consumer::{ConsumerConfigExt, ConsumerStream, OffsetManagementStrategy, Record, RetryMode};
use ::fluvio::dataplane::link::ErrorCode;
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

/// Where a received stream item stands against the offset a cursor expects.
pub(super) enum Received {
    /// The expected record.
    Next(Record),
    /// Below the expected offset (a re-opened stream resends): skip it.
    Repeat,
    /// Past the expected offset: the stream skipped records.
    Gap(Offset),
}

/// Sorts a stream item for a cursor expecting `next`; a stream error or end is transient.
pub(super) fn received(
    item: Option<std::result::Result<Record, ErrorCode>>,
    next: Offset,
    what: &str,
) -> Result<Received> {
    let record = match item {
        Some(Ok(record)) => record,
        Some(Err(code)) => return Err(transient(what, code)),
        None => return Err(transient(what, "the stream ended")),
    };
    let offset = u64::try_from(record.offset()).map_err(|_| Error::Fatal("a negative offset".into()))?;
    Ok(match offset.cmp(&next) {
        std::cmp::Ordering::Less => Received::Repeat,
        std::cmp::Ordering::Equal => Received::Next(record),
        std::cmp::Ordering::Greater => Received::Gap(offset),
    })
}

struct Cursor {
    stream: Stream,
    /// The offset the stream must yield next.
    next: Offset,
    /// The stream skipped records: open a new one at `next` before reading again.
    stale: bool,
}

/// One partition's cursor, locked while a fetch uses it. A fetch dropped mid-wait (the runner
/// selects between a fetch and its running steps) leaves the cursor in place: `next` only moves
/// for records already handed out, and nothing is awaited between taking a record and
/// returning it.
type Slot = std::sync::Arc<tokio::sync::Mutex<Option<Cursor>>>;

/// The open streams of one process, by (Fluvio topic, partition).
pub(super) struct Readers {
    max_bytes: i32,
    slots: Mutex<HashMap<(String, Partition), Slot>>,
    /// Times a gap made a reader re-seek (the client fault above).
    reseeks: AtomicU64,
}

impl Readers {
    pub(super) fn new(max_bytes: i32) -> Self {
        Self { max_bytes, slots: Mutex::new(HashMap::new()), reseeks: AtomicU64::new(0) }
    }

    pub(super) fn clear(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry((topic.to_string(), partition)).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if !guard.as_ref().is_some_and(|c| c.next == from && !c.stale) {
            if guard.as_ref().is_some_and(|c| c.stale) {
                self.reseeks.fetch_add(1, Ordering::Relaxed);
            }
            let stream = open(fluvio, topic, partition, from, self.max_bytes, None).await?;
            *guard = Some(Cursor { stream, next: from, stale: false });
        }
        let cursor = guard.as_mut().expect("set above");
        let what = format!("reading {topic}/{partition}");
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
                            self.reseeks.fetch_add(1, Ordering::Relaxed);
                            cursor.stream = open(fluvio, topic, partition, cursor.next, self.max_bytes, None).await?;
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
            match received(item, cursor.next, &what)? {
                Received::Repeat => {}
                Received::Next(record) => {
                    out.push(decode(partition, cursor.next, &record)?);
                    cursor.next += 1;
                }
                Received::Gap(got) => {
                    tracing::warn!(topic, partition, expected = cursor.next, got, "fluvio skipped records; re-seeking");
                    // Re-opened by the next call (awaiting here could drop what `out` holds).
                    cursor.stale = true;
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn decode(partition: Partition, offset: Offset, record: &Record) -> Result<ConsumerRecord> {
    let key = record.key().ok_or_else(|| Error::Fatal(format!("record {offset} has no key")))?;
    let (_, key) = envelope::split_key(key)?;
    let (headers, value) = envelope::decode_value(record.value())?;
    Ok(ConsumerRecord { partition, offset, key, headers, value })
}
