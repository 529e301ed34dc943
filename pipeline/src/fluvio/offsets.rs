//! Where consumer groups are, and where partitions begin and end.
//!
//! - **Group offsets are Fluvio consumer offsets.** Fluvio stores, per consumer id and
//!   partition, the last record a consumer *yielded and committed*; Herald's contract stores
//!   the next offset to read, so Herald's `next` is Fluvio's `offset + 1`. The client can only
//!   commit the record its stream yielded last, so each (group, partition) keeps a commit
//!   stream (`offset_consumer` = the group, manual strategy) that reads along behind the
//!   group: to commit `next` it advances until it yields `next - 1`, then commits and flushes
//!   (the flush waits for the SPU's acknowledgement: durable when it returns). It re-reads
//!   what the group already read (twice the read bytes on a partition, no extra round trip per
//!   commit); a gap re-seeks as in `super::reader`; a commit below the stream's position opens a
//!   new stream there.
//! - **Start and end offsets** come from the partition leader's `FetchOffsets` answer, over a
//!   socket per SPU (the client keeps its own private); leaders and sockets are looked up again
//!   after an error.
//!
//! It is not: a lease. Which worker may process a partition is the shared state's business.

use super::reader::{self, Received, Stream};
use super::transient;
use crate::topic::{Offset, Partition};
use crate::{Error, Result};
use ::fluvio::dataplane::api::RequestMessage;
use ::fluvio::dataplane::record::ReplicaKey;
use ::fluvio::metadata::partition::PartitionSpec;
use ::fluvio::metadata::spu::SpuSpec;
use ::fluvio::Fluvio;
use fluvio_socket::FluvioSocket;
use fluvio_spu_schema::server::fetch_offset::FetchOffsetsRequest;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a commit may take to catch its stream up to the offset it commits.
const COMMIT_READ_WAIT: Duration = Duration::from_secs(10);

/// The group's committed next offset (Fluvio's last committed + 1), if it ever committed.
pub(super) async fn committed(
    fluvio: &Fluvio,
    topic: &str,
    group: &str,
    partition: Partition,
) -> Result<Option<Offset>> {
    let all = fluvio.consumer_offsets().await.map_err(|e| transient("listing consumer offsets", e))?;
    Ok(all
        .into_iter()
        .find(|c| c.consumer_id == group && c.topic == topic && c.partition == partition)
        .and_then(|c| u64::try_from(c.offset + 1).ok()))
}

struct CommitCursor {
    stream: Stream,
    /// The offset the stream yields next.
    next: Offset,
}

type Link = Arc<tokio::sync::Mutex<FluvioSocket>>;

/// Commit streams and leader sockets of one process.
pub(super) struct Offsets {
    max_bytes: i32,
    cursors: Mutex<HashMap<(String, String, Partition), CommitCursor>>,
    /// The leader's public address per (topic, partition).
    leaders: Mutex<HashMap<(String, Partition), String>>,
    /// One socket per SPU address.
    links: Mutex<HashMap<String, Link>>,
}

impl Offsets {
    pub(super) fn new(max_bytes: i32) -> Self {
        Self {
            max_bytes,
            cursors: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn clear(&self) {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.leaders.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.links.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Records that `group` is done with everything before `next` on the partition.
    pub(super) async fn commit(
        &self,
        fluvio: &Fluvio,
        topic: &str,
        group: &str,
        partition: Partition,
        next: Offset,
    ) -> Result<()> {
        // Fluvio stores the last record consumed: before the first record there is nothing.
        let Some(target) = next.checked_sub(1) else { return Ok(()) };
        let key = (topic.to_string(), group.to_string(), partition);
        let taken = self.cursors.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let mut cursor = match taken {
            Some(c) if c.next <= target => c,
            _ => CommitCursor {
                stream: reader::open(fluvio, topic, partition, target, self.max_bytes, Some(group)).await?,
                next: target,
            },
        };
        let deadline = tokio::time::Instant::now() + COMMIT_READ_WAIT;
        let what = format!("reading {topic}/{partition} to commit {group}");
        while cursor.next <= target {
            let item = tokio::time::timeout_at(deadline, cursor.stream.next())
                .await
                .map_err(|_| transient(&what, "record not readable"))?;
            match reader::received(item, cursor.next, &what)? {
                Received::Repeat => {}
                Received::Next(_) => cursor.next += 1,
                Received::Gap(got) => {
                    tracing::warn!(topic, partition, expected = cursor.next, got, "fluvio skipped records; re-seeking");
                    cursor.stream =
                        reader::open(fluvio, topic, partition, cursor.next, self.max_bytes, Some(group)).await?;
                }
            }
        }
        cursor.stream.offset_commit().await.map_err(|e| transient("committing an offset", e))?;
        cursor.stream.offset_flush().await.map_err(|e| transient("flushing an offset", e))?;
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).insert(key, cursor);
        Ok(())
    }

    /// `(start, end)` of a partition: the oldest stored offset and the next one to be written.
    pub(super) async fn bounds(&self, fluvio: &Fluvio, topic: &str, partition: Partition) -> Result<(Offset, Offset)> {
        let result = self.ask_leader(fluvio, topic, partition).await;
        if result.is_err() {
            self.leaders.lock().unwrap_or_else(|p| p.into_inner()).remove(&(topic.to_string(), partition));
        }
        result
    }

    async fn ask_leader(&self, fluvio: &Fluvio, topic: &str, partition: Partition) -> Result<(Offset, Offset)> {
        let addr = self.leader(fluvio, topic, partition).await?;
        let link = self.link(&addr).await?;
        let request = RequestMessage::new_request(FetchOffsetsRequest::new(topic.to_string(), partition));
        // The exchange runs in its own task: a caller dropped mid-wait (a runner's `select!`)
        // must not leave an unread answer on the socket for the next request to take as its own.
        let exchange = link.clone();
        let answer = tokio::spawn(async move { exchange.lock().await.send(&request).await })
            .await
            .map_err(|e| transient("asking for offsets", e))?;
        let answer = match answer {
            Ok(a) => a.response,
            Err(e) => {
                self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(&addr);
                return Err(transient(&format!("asking {addr} for offsets"), e));
            }
        };
        let Some(found) = answer.find_partition(&ReplicaKey::new(topic.to_string(), partition)) else {
            // Another request's answer, or a leader that moved: start over on a new socket.
            self.links.lock().unwrap_or_else(|p| p.into_inner()).remove(&addr);
            return Err(transient("fetching offsets", format!("{addr} does not lead {topic}/{partition}")));
        };
        if found.error_code.is_error() {
            return Err(transient("fetching offsets", format!("{:?}", found.error_code)));
        }
        let as_offset = |v: i64| u64::try_from(v).map_err(|_| Error::Fatal(format!("offset {v} from {addr}")));
        Ok((as_offset(found.start_offset)?, as_offset(found.last_stable_offset)?))
    }

    async fn leader(&self, fluvio: &Fluvio, topic: &str, partition: Partition) -> Result<String> {
        let key = (topic.to_string(), partition);
        if let Some(addr) = self.leaders.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(addr.clone());
        }
        let admin = fluvio.admin().await;
        let name = format!("{topic}-{partition}");
        let partitions =
            admin.list::<PartitionSpec, _>(vec![name.clone()]).await.map_err(|e| transient("listing partitions", e))?;
        let leader = partitions
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.spec.leader)
            .ok_or_else(|| transient("finding a leader", format!("no partition {name} yet")))?;
        let spus = admin.all::<SpuSpec>().await.map_err(|e| transient("listing SPUs", e))?;
        let addr = spus
            .iter()
            .find(|s| s.spec.id == leader)
            .map(|s| s.spec.public_endpoint.addr())
            .ok_or_else(|| transient("finding a leader", format!("SPU {leader} of {name} is not registered")))?;
        self.leaders.lock().unwrap_or_else(|p| p.into_inner()).insert(key, addr.clone());
        Ok(addr)
    }

    async fn link(&self, addr: &str) -> Result<Link> {
        if let Some(link) = self.links.lock().unwrap_or_else(|p| p.into_inner()).get(addr) {
            return Ok(link.clone());
        }
        let socket =
            FluvioSocket::connect(addr).await.map_err(|e| transient(&format!("connecting to SPU {addr}"), e))?;
        let link = Arc::new(tokio::sync::Mutex::new(socket));
        self.links.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), link.clone());
        Ok(link)
    }
}
