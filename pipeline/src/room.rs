//! Backpressure from committed offsets: before producing to a bounded partition, wait while
//! `end − (lowest committed offset of the topic's consumer groups) ≥ capacity`.
//!
//! This is the runner's job, not the backend's (Fluvio never blocks a producer): the producing
//! step waits, its input stays unfinished, and the pressure travels up the dataflow.
//!
//! Express reserve: a step of a lane's first steps (a new campaign, tenant or route; the
//! runner decides, `Emitter::set_express`) may fill a second `capacity` behind the first.
//! Steady traffic never enters it, so under a full pipeline a new campaign's first records are
//! not queued behind every big campaign's producers; a partition still never holds more than
//! twice its capacity. The view of
//! a partition's room is refreshed at most every [`REFRESH`] while it has room, so a busy
//! producer costs the backend a couple of offset reads per partition per interval, not per
//! record.

use crate::topic::{Offset, Partition, TopicBackend};
use crate::{topics, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a partition known to have room is trusted without asking again.
pub const REFRESH: Duration = Duration::from_millis(20);

/// (topic, partition) → the offset below which producing is fine, and when it was read.
type Known = HashMap<(&'static str, Partition), (Offset, Instant)>;

/// Per-partition room, shared by the emitters of one process.
pub struct Room {
    backend: Arc<dyn TopicBackend>,
    known: Mutex<Known>,
}

impl Room {
    pub fn new(backend: Arc<dyn TopicBackend>) -> Arc<Self> {
        Arc::new(Self { backend, known: Mutex::new(HashMap::new()) })
    }

    /// The lowest committed offset over the topic's consumer groups (a group that never
    /// committed counts from where the partition starts).
    async fn low(&self, topic: &str, partition: Partition) -> Result<Offset> {
        let start = self.backend.start_offset(topic, partition).await?;
        let mut low = None;
        for group in topics::consumers_of(topic) {
            let c = self.backend.committed(topic, group, partition).await?.unwrap_or(start);
            low = Some(low.map_or(c, |l: Offset| l.min(c)));
        }
        Ok(low.unwrap_or(Offset::MAX / 2))
    }

    /// Waits until `topic`'s `partition` has room for another record (`express`: in the
    /// express reserve, see the module docs).
    pub async fn wait(&self, topic: &'static str, partition: Partition, express: bool) -> Result<()> {
        let Some(capacity) = self.backend.spec(topic)?.capacity else { return Ok(()) };
        let reserve = if express { capacity } else { 0 };
        let mut pause = Duration::from_millis(1);
        loop {
            let end = self.backend.end_offset(topic, partition).await?;
            let cached = self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&(topic, partition)).copied();
            let limit = match cached {
                Some((limit, at)) if at.elapsed() < REFRESH && end < limit => limit,
                _ => {
                    let limit = self.low(topic, partition).await?.saturating_add(capacity);
                    self.known
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((topic, partition), (limit, Instant::now()));
                    limit
                }
            };
            if end < limit.saturating_add(reserve) {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::ProducerRecord;
    use crate::EmbeddedTopics;

    #[tokio::test]
    async fn an_express_step_has_a_second_capacity_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let backend = EmbeddedTopics::open(dir.path(), &topics::all(), Default::default()).unwrap();
        let topic = topics::CHUNKS.name();
        let capacity = topics::CHUNKS.spec.capacity.unwrap();
        let room = Room::new(backend.clone());
        let fill = |n: u64| {
            let records = (0..n)
                .map(|_| ProducerRecord { topic, partition: 0, key: 0, headers: Default::default(), value: vec![1] })
                .collect();
            backend.produce(records)
        };
        let waits = |express: bool| {
            let room = room.clone();
            async move { tokio::time::timeout(Duration::from_millis(100), room.wait(topic, 0, express)).await.is_err() }
        };
        fill(capacity).await.unwrap();
        assert!(waits(false).await, "a full partition has no room for steady traffic");
        assert!(!waits(true).await, "an express step goes into the reserve");
        fill(capacity).await.unwrap();
        assert!(waits(true).await, "the reserve is one more capacity, no more");
        // One record consumed: room in the reserve again, none for steady traffic.
        backend.commit(topic, topics::RENDER.name, 0, 1).await.unwrap();
        tokio::time::sleep(REFRESH).await;
        assert!(!waits(true).await);
        assert!(waits(false).await, "steady traffic waits until the partition is below capacity");
    }
}
