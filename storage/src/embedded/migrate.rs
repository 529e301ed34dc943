//! Moves, done once when the store opens, of per-message keyspaces whose key layout changed.
//!
//! Message rows and claims were keyed `(tenant, campaign, bucket, id)` in 36 bytes in `messages` and
//! `claims_by_bucket`; they are now keyed by [`keys::short_message`] (20 bytes for small ids,
//! the id's other 32 bits in front of the value) in `messages_short` and `claims_short`. A store
//! written before has its entries copied over at open, before anything reads or writes them,
//! and the old keyspace is then deleted.
//!
//! **Crash-safe.** The copy writes the same bytes for the same entries every time, and the old
//! keyspace is deleted only after the copy is persisted: an open cut short copies again.
//!
//! It is not: a general migration framework, nor online — the store is not open to the engine
//! until the move is done (measured: `herald serve` on a 1M x 4 bench's store, 2M entries to
//! move, was listening after 7.8 s against 2.3 s once moved: ~2.7 s per million entries).

use super::keys::{self, read_u128, read_u32, read_u64};
use crate::Result;
use fjall::{Database, Keyspace, PersistMode};
use schemas::{CampaignId, MessageId, MessageKey, TenantId};

/// Entries per write batch of the copy.
const MOVE_BATCH: usize = 10_000;

/// The message a 36-byte `(tenant, campaign, bucket, id)` key names.
fn parse_long_key(key: &[u8]) -> Result<MessageKey> {
    if key.len() != keys::MESSAGE_BUCKET_PREFIX + 16 {
        return Err(schemas::Error::Decode(format!("a {}-byte key in a per-message keyspace", key.len())).into());
    }
    Ok(MessageKey {
        tenant: TenantId(read_u64(key, 0)),
        campaign: CampaignId(read_u64(key, 8)),
        bucket: read_u32(key, keys::MESSAGE_BUCKET_AT),
        id: MessageId(read_u128(key, keys::MESSAGE_BUCKET_PREFIX)),
    })
}

/// Copies every entry of keyspace `old` (if the store has one) into `new` under its short
/// key, then deletes `old`. Returns how many entries were copied.
pub(super) fn to_short_keys(
    db: &Database,
    old: &str,
    open: impl Fn(&str) -> fjall::Result<Keyspace>,
    new: &Keyspace,
) -> Result<u64> {
    if !db.keyspace_exists(old) {
        return Ok(0);
    }
    let from = open(old)?;
    let mut moved = 0u64;
    let mut batch = db.batch().durability(Some(PersistMode::Buffer));
    for guard in from.iter() {
        let (key, value) = guard.into_inner()?;
        let message = parse_long_key(&key)?;
        batch.insert(new, keys::short_message(&message), super::with_check(message.id, &value));
        moved += 1;
        if moved.is_multiple_of(MOVE_BATCH as u64) {
            batch.commit()?;
            batch = db.batch().durability(Some(PersistMode::Buffer));
        }
    }
    batch.commit()?;
    db.persist(PersistMode::SyncAll)?;
    db.delete_keyspace(from)?;
    if moved > 0 {
        tracing::info!(from = old, entries = moved, "moved a per-message keyspace to short keys");
    }
    Ok(moved)
}
