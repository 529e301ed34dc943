//! Herald's five stages, in flow order, and the providers deliver calls.
//!
//! ```text
//! campaign.sends → [chunk] → campaign.chunks → [render] → messages.rendered → [throttle]
//!   → messages.ready → [deliver] → delivery.outcomes / delivery.retry / delivery.dlq
//!   → [reconcile] ← receipts.inbound
//! ```
//!
//! Each stage implements `pipeline::Stage` and is driven by `pipeline::runner`; none of them
//! knows which topic backend or store implementation it runs on.
//!
//! It is not: the composition root (the `herald` crate wires stages, backends and config).

pub mod chunk;
pub mod control;
pub mod deliver;
pub mod error;
pub mod lifecycle;
pub mod reconcile;
pub mod render;
pub mod throttle;

pub use error::{Error, Result};
