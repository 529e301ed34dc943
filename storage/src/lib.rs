//! Herald's durable state: the store traits and the embedded implementation.
//!
//! The traits are shaped for ScyllaDB: every table has a partition key and a clustering key,
//! there are no cross-partition transactions in the contract, and reads are point lookups or
//! range scans within one partition. The embedded implementation ([`EmbeddedStore`], on fjall)
//! gives more (atomic multi-key batches) but callers may rely only on what the traits promise:
//! each [`MessageLog::apply`] call is atomic *per message-log partition and its counter row*,
//! which ScyllaDB can provide with an unlogged batch per partition plus a single-writer counter
//! row.
//!
//! # Layout
//! - [`model`]: stored types (tenants, templates, audiences, campaigns, message records, ...).
//! - [`secrets`]: AES-256-GCM sealing of provider secrets at rest.
//! - [`traits`]: `Catalog`, `Audiences`, `Checkpoints`, `MessageLog` (the store, split by who
//!   needs what), with what each promises atomically.
//! - [`state`]: `SharedState`: ids, send claims, leases, pacing tokens, campaign control flags,
//!   idempotency reservations, quotas, stopped senders.
//! - [`embedded`]: the fjall implementation with batched, crash-safe commits, and the
//!   in-process shared state.
//!
//! It is not: a cache, a query engine, or the place where message state transitions are decided
//! (that is `stages::reconcile`).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod error;
pub mod model;
pub mod redis;
pub mod scylla;
pub mod secrets;
pub mod state;
pub mod traits;

pub use embedded::{Durability, EmbeddedState, EmbeddedStore, EmbeddedStoreConfig};
pub use error::{Error, Result};
pub use model::*;
pub use redis::{RedisConfig, RedisState};
pub use state::{ClaimWrite, Fence, Lease, LeaseStep, Pace, SharedState, TokenGrant};
pub use traits::*;

/// Recipients per bucket: a bucket is one partition of the recipients and message-log tables,
/// kept far below ScyllaDB's ~100K-rows-per-partition comfort zone.
pub const BUCKET_SIZE: u64 = 10_000;

/// The bucket a recipient id falls into.
pub fn bucket_of(recipient: schemas::RecipientId) -> u32 {
    (recipient.0 / BUCKET_SIZE) as u32
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
