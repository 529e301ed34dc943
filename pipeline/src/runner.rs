//! Runs a [`Stage`] over a topic: one consumer loop per partition.
//!
//! Per loop: fetch up to `max_batch` records from the committed offset → decode (undecodable
//! records go to `pipeline.dead`) → `process` → produce what was emitted → commit. A failing
//! batch is retried with its hint up to `max_attempts`, then dead-lettered with the error. On
//! shutdown a loop finishes and commits the batch in hand, then exits (graceful drain); a batch
//! still unfinished after the drain grace (e.g. blocked on a full topic whose consumer already
//! stopped) is abandoned uncommitted and redone after restart.

use crate::stage::{Emitter, Input, RetryHint, Stage};
use crate::topic::{Partition, ProducerRecord, Topic, TopicBackend};
use crate::{topics, Result, Shutdown};
use schemas::codec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How a stage is driven.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Consumer group (defaults to the stage name).
    pub group: Option<String>,
    /// Records per `process` call.
    pub max_batch: usize,
    /// How long a fetch waits for the first record before re-checking shutdown.
    pub fetch_wait: Duration,
    /// Attempts of one batch before it is dead-lettered.
    pub max_attempts: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self { group: None, max_batch: 4, fetch_wait: Duration::from_millis(100), max_attempts: 8 }
    }
}

/// Counters a runner keeps per stage (exported as metrics by the binary).
#[derive(Debug, Default)]
pub struct StageMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    pub dead_records: AtomicU64,
    /// Sum of batch processing time in microseconds.
    pub busy_us: AtomicU64,
}

/// Spawns one consumer loop per partition of `input` into `tasks`.
pub fn spawn<S: Stage>(
    tasks: &mut JoinSet<Result<()>>,
    stage: Arc<S>,
    input: Topic<S::In>,
    backend: Arc<dyn TopicBackend>,
    config: RunnerConfig,
    shutdown: Shutdown,
) -> Arc<StageMetrics> {
    let metrics = Arc::new(StageMetrics::default());
    for partition in 0..input.spec.partitions {
        let (stage, backend, config, shutdown, metrics) =
            (stage.clone(), backend.clone(), config.clone(), shutdown.clone(), metrics.clone());
        tasks.spawn(async move { consume(stage, input, partition, backend, config, shutdown, metrics).await });
    }
    metrics
}

async fn consume<S: Stage>(
    stage: Arc<S>,
    input: Topic<S::In>,
    partition: Partition,
    backend: Arc<dyn TopicBackend>,
    config: RunnerConfig,
    shutdown: Shutdown,
    metrics: Arc<StageMetrics>,
) -> Result<()> {
    let group = config.group.clone().unwrap_or_else(|| stage.name().to_string());
    let topic = input.name();
    let mut next = backend.committed(topic, &group, partition).await?;
    let mut out = Emitter::new(backend.clone());
    while !shutdown.is_triggered() {
        let records = backend.fetch(topic, partition, next, config.max_batch, config.fetch_wait).await?;
        let Some(last) = records.last() else { continue };
        let after = last.offset + 1;
        metrics.records_in.fetch_add(records.len() as u64, Ordering::Relaxed);

        let mut batch = Vec::with_capacity(records.len());
        // Raw copies of the decoded records, so a dead-lettered batch keeps its original bytes.
        let mut raw = Vec::with_capacity(records.len());
        let mut dead = Vec::new();
        for r in records {
            match codec::decode::<S::In>(&r.value) {
                Ok(value) => {
                    batch.push(Input { partition, offset: r.offset, headers: r.headers.clone(), value });
                    raw.push(r);
                }
                Err(e) => dead.push(dead_record(topic, r.key, r.value, r.headers, &format!("undecodable: {e}"))),
            }
        }
        if let Some(first) = batch.first() {
            out.set_headers(first.headers.clone());
        }
        let started = Instant::now();
        let mut attempt = 0;
        while !batch.is_empty() {
            attempt += 1;
            let before = out.emitted();
            let processed = tokio::select! {
                r = async {
                    let r = stage.process(std::mem::take(&mut batch), &mut out).await;
                    if r.is_ok() {
                        out.flush().await?;
                    }
                    Ok::<_, crate::Error>(r)
                } => r?,
                // Past the drain grace: abandon the batch uncommitted; it is redone after restart.
                _ = shutdown.expired() => return Ok(()),
            };
            match processed {
                Ok(()) => {
                    metrics.records_out.fetch_add(out.emitted() - before, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    out.discard();
                    metrics.failures.fetch_add(1, Ordering::Relaxed);
                    if shutdown.is_triggered() {
                        // Failing while shutting down (e.g. a retry not yet due): leave the
                        // batch uncommitted for the next run instead of retrying or dead-lettering.
                        return Ok(());
                    }
                    match e.hint {
                        RetryHint::RetryAfter(delay) if attempt < config.max_attempts => {
                            tracing::warn!(stage = stage.name(), partition, attempt, error = %e, "batch failed; retrying");
                            tokio::time::sleep(delay * attempt).await;
                            // These decoded once already, so they decode again.
                            batch = raw
                                .iter()
                                .filter_map(|r| {
                                    let value = codec::decode::<S::In>(&r.value).ok()?;
                                    Some(Input { partition, offset: r.offset, headers: r.headers.clone(), value })
                                })
                                .collect();
                        }
                        _ => {
                            tracing::error!(stage = stage.name(), partition, attempt, error = %e, "batch dead-lettered");
                            for r in raw.drain(..) {
                                dead.push(dead_record(topic, r.key, r.value, r.headers, &e.message));
                            }
                        }
                    }
                }
            }
        }
        if !dead.is_empty() {
            metrics.dead_records.fetch_add(dead.len() as u64, Ordering::Relaxed);
            backend.produce(dead).await?;
        }
        backend.commit(topic, &group, partition, after).await?;
        next = after;
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics.busy_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn dead_record(
    topic: &str,
    key: u64,
    value: Vec<u8>,
    mut headers: schemas::envelope::Headers,
    error: &str,
) -> ProducerRecord {
    headers.set("herald-source-topic", topic);
    headers.set("herald-error", error);
    ProducerRecord { topic: topics::DEAD_RECORDS.name(), key, headers, value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::StageError;
    use crate::{EmbeddedTopics, TopicSpec};
    use schemas::TenantId;
    use std::sync::atomic::AtomicU32;

    const IN: Topic<u64> = Topic::new("in", 1, Some(8));
    const OUT: Topic<u64> = Topic::new("out", 1, None);

    /// Doubles its input; fails once transiently on 3 and always permanently on 7.
    struct Doubler {
        failures_of_three: AtomicU32,
    }

    impl Stage for Doubler {
        type In = u64;
        fn name(&self) -> &'static str {
            "doubler"
        }
        async fn process(&self, batch: Vec<Input<u64>>, out: &mut Emitter) -> std::result::Result<(), StageError> {
            for input in batch {
                if input.value == 3 && self.failures_of_three.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(StageError::retry(Duration::from_millis(1), "flaky"));
                }
                if input.value == 7 {
                    return Err(StageError::permanent("seven is not allowed"));
                }
                out.emit(&OUT, TenantId(0), &(input.value * 2)).map_err(crate::stage::transient)?;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn retries_transient_dead_letters_permanent_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let specs: Vec<TopicSpec> = vec![IN.spec, OUT.spec, topics::DEAD_RECORDS.spec];
        let backend = EmbeddedTopics::open(dir.path(), &specs, Default::default()).unwrap();
        let dyn_backend: Arc<dyn TopicBackend> = backend.clone();
        let mut input = Emitter::new(dyn_backend.clone());
        for v in [1u64, 3, 7, 5] {
            input.emit(&IN, TenantId(0), &v).unwrap();
        }
        input.flush().await.unwrap();
        // Undecodable garbage is dead-lettered on its own without stopping the stream.
        backend
            .produce(vec![ProducerRecord { topic: "in", key: 0, headers: Default::default(), value: vec![9, 9] }])
            .await
            .unwrap();

        let shutdown = Shutdown::new();
        let mut tasks = JoinSet::new();
        let config = RunnerConfig { max_batch: 1, fetch_wait: Duration::from_millis(5), ..Default::default() };
        let stage = Arc::new(Doubler { failures_of_three: AtomicU32::new(0) });
        let metrics = spawn(&mut tasks, stage.clone(), IN, dyn_backend.clone(), config, shutdown.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend.committed("in", "doubler", 0).await.unwrap() < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.trigger();
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let out = backend.fetch("out", 0, 0, 100, Duration::ZERO).await.unwrap();
        let values: Vec<u64> = out.iter().map(|r| codec::decode(&r.value).unwrap()).collect();
        assert_eq!(values, vec![2, 6, 10]);
        let dead = backend.fetch(topics::DEAD_RECORDS.name(), 0, 0, 100, Duration::ZERO).await.unwrap();
        assert_eq!(dead.len(), 2);
        assert_eq!(codec::decode::<u64>(&dead[0].value).unwrap(), 7, "dead letter keeps the original bytes");
        assert_eq!(dead[0].headers.get("herald-error"), Some("seven is not allowed"));
        assert!(dead[1].headers.get("herald-error").unwrap().starts_with("undecodable"));
        assert_eq!(metrics.dead_records.load(Ordering::Relaxed), 2);
        assert_eq!(stage.failures_of_three.load(Ordering::SeqCst), 2);
    }
}
