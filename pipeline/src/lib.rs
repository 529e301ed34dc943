//! Herald's streaming core: typed topics, the [`Stage`] trait and the runner that drives stages.
//!
//! Topics are shaped after Fluvio: a topic has partitions chosen by key (the tenant), records
//! have offsets and headers, consumer groups commit offsets, delivery is at-least-once. The
//! [`TopicBackend`] trait is that contract at the byte level; [`EmbeddedTopics`] implements it
//! durably on fjall, and a Fluvio backend can implement it without any stage changing.
//!
//! The runner ([`runner::spawn`]) owns flow control: it fetches bounded batches per partition,
//! calls [`Stage::process`], produces what the stage emitted, and only then commits the input
//! offset — so an offset is never committed before its downstream effect is durable. Producers
//! block while a bounded topic is full, so backpressure runs all the way up to the chunk stage.
//! Failed batches are retried per the stage's [`RetryHint`] and dead-lettered with a reason
//! after that; records that do not decode are dead-lettered individually.
//!
//! # Layout
//! - [`topic`]: `Topic<T>`, records, the `TopicBackend` trait.
//! - [`topics`]: the typed topic constants of the dataflow.
//! - [`embedded`]: the embedded, durable topic backend.
//! - [`stage`]: the `Stage` trait, `Emitter`, `StageError`.
//! - [`runner`]: per-partition consumer loops, retries, dead letters, graceful drain.
//!
//! It is not: a stage (see `stages`), nor a place for business rules.

pub mod embedded;
pub mod error;
pub mod runner;
pub mod shutdown;
pub mod stage;
pub mod topic;
pub mod topics;

pub use embedded::{EmbeddedTopics, EmbeddedTopicsConfig};
pub use error::{Error, Result};
pub use runner::{RunnerConfig, StageMetrics};
pub use shutdown::Shutdown;
pub use stage::{Emitter, Input, RetryHint, Stage, StageError};
pub use topic::{ConsumerRecord, Offset, Partition, ProducerRecord, Topic, TopicBackend, TopicSpec};
