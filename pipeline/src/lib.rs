//! Herald's streaming core: typed topics, the [`Stage`] trait and the runner that drives stages.
//!
//! Topics are shaped after Fluvio: a topic has partitions (Herald picks each record's), records
//! have offsets and headers, consumer groups commit offsets, delivery is at-least-once. The
//! [`TopicBackend`] trait is that contract at the byte level; [`EmbeddedTopics`] implements it
//! durably on local segment files, and [`fluvio::FluvioTopics`] on a Fluvio cluster, without any
//! stage changing. The
//! [`conformance`] kit says what any backend must do.
//!
//! The runner ([`runner::spawn`]) owns flow control: per partition it puts records in lanes
//! (chosen by the stage), runs lanes concurrently so one that waits never holds up another,
//! produces what a step emitted, and only then counts its input done; the committed offset is
//! the lowest offset not yet done. Waiting work goes to the runner's durable held store
//! ([`held`]), so memory stays bounded by configuration. Producers wait while a bounded topic's
//! consumers are behind ([`room`]); the backend itself never blocks.
//!
//! # Layout
//! - [`topic`]: `Topic<T>`, records, the `TopicBackend` trait.
//! - [`topics`]: the typed topic constants and the stages consuming them, declared once.
//! - [`stage`]: the `Stage` trait (lanes, `Step::Wait`, lifecycle hooks), `Emitter`.
//! - [`runner`]: per-partition consumer loops with lanes, holding, retries, dead letters, drain.
//! - [`held`]: the held store contract; [`room`]: backpressure from committed offsets.
//! - [`board`]: the metrics snapshots runners and stages publish.
//! - [`trace`]: trace context carried in record headers, a span per step.
//! - [`embedded`]: the embedded, durable topic backend and held store.
//! - [`fluvio`]: the distributed topic backend on a Fluvio cluster.
//!
//! It is not: a stage (see `stages`), nor a place for business rules.

pub mod board;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod error;
pub mod fluvio;
pub mod held;
pub mod room;
pub mod runner;
pub mod shutdown;
pub mod stage;
pub mod topic;
pub mod topics;
pub mod trace;

pub use board::{Board, Sample};
pub use embedded::{EmbeddedHeld, EmbeddedTopics, EmbeddedTopicsConfig};
pub use error::{Error, Result};
pub use held::{HeldRecord, HeldRecords};
pub use runner::{RunnerConfig, Runtime, StageHandle, StageHealth, StageMetrics};
pub use shutdown::Shutdown;
pub use stage::{Emitter, Input, Lane, PartitionLease, RetryHint, Stage, StageError, Step};
pub use topic::{ConsumerRecord, Offset, Partition, ProducerRecord, Topic, TopicBackend, TopicSpec};
