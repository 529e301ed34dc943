//! Small pure building blocks several crates need, written once: a token bucket, a sliding
//! window counter, a TTL cache, a two-generation cache of recent
//! writes and HMAC signatures. No I/O; time is passed in.

pub mod generations;
pub mod signing;
pub mod token_bucket;
pub mod ttl_cache;
pub mod window;

pub use generations::{Generations, IdHasher};
pub use signing::{constant_time_eq, sign_sha256_hex, verify_sha256_hex};
pub use token_bucket::TokenBucket;
pub use ttl_cache::TtlCache;
pub use window::SlidingWindow;
