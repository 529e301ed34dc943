//! The metrics board: what runners and stages publish for operators, as snapshots.
//!
//! Every stage's runner publishes, about once a second, its own counters (records in and out,
//! steps, failures, held and dead records, busy time, failing partitions) together with what
//! the stage itself reports ([`crate::Stage::metrics`]: reconcile's transitions, deliver's
//! senders, throttle's run-ahead). Readers (the metrics endpoint) only ever see these
//! snapshots; nothing reaches into a running stage. Each source replaces its whole snapshot, so
//! a sample that disappears (a sender no longer cached) disappears from the board.
//!
//! It is not: a metrics library. The metrics listener (`herald_api::metrics`) renders these
//! snapshots through the Prometheus exporter of the `metrics` crates; nothing aggregates across
//! processes (Prometheus does).

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One published value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Self {
        Self { name, help, kind: Kind::Counter, labels: Vec::new(), value }
    }
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self { name, help, kind: Kind::Gauge, labels: Vec::new(), value }
    }
    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key, value.into()));
        self
    }
}

/// Snapshots by source (a stage name).
#[derive(Debug, Default)]
pub struct Board {
    sources: Mutex<BTreeMap<String, Vec<Sample>>>,
}

impl Board {
    /// Replaces `source`'s snapshot.
    pub fn publish(&self, source: impl Into<String>, samples: Vec<Sample>) {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).insert(source.into(), samples);
    }

    /// Every published sample.
    pub fn samples(&self) -> Vec<Sample> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().cloned().collect()
    }

    /// The value of the first sample called `name` whose labels include `labels` (tests, reports).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .into_iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v)))
            .map(|s| s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_snapshots() {
        let board = Board::default();
        board.publish("a", vec![Sample::counter("x_total", "x", 1.0).label("stage", "a")]);
        board.publish("b", vec![Sample::counter("x_total", "x", 2.0).label("stage", "b")]);
        assert_eq!(board.samples().len(), 2);
        board.publish("a", vec![]);
        assert_eq!(board.value("x_total", &[("stage", "a")]), None);
        assert_eq!(board.value("x_total", &[]), Some(2.0));
    }
}
