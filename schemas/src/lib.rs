//! Herald's record types: what travels on topics, the typed ids, and the codec.
//!
//! This crate sits under everything else (`schemas <- pipeline <- stages`). It holds plain data
//! and pure functions only: no I/O, no tokio, no storage.
//!
//! # Layout
//! - [`ids`]: newtype ids (`TenantId`, `CampaignId`, `MessageId`, ...) and the deterministic
//!   derivation of a `MessageId` from (tenant, campaign, recipient, channel).
//! - [`records`]: the records that flow between stages. Messages always travel in batches.
//! - [`envelope`]: headers carried beside every record (room for W3C `traceparent`).
//! - [`codec`]: the compact binary codec for topic payloads and stored values (bincode 2,
//!   prefixed by a format version byte).
//! - [`helpers`]: pure building blocks several crates use once: token bucket, sliding window,
//!   TTL cache, HMAC signatures.
//!
//! It is not: a topic implementation (see `pipeline`) nor a storage schema (see `storage`).

pub mod codec;
pub mod envelope;
pub mod error;
pub mod helpers;
pub mod ids;
pub mod records;

pub use error::{Error, Result};
pub use ids::*;
pub use records::*;
