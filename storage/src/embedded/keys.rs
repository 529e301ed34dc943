//! Big-endian key tuples: byte order equals tuple order, so partitions are contiguous ranges.

/// Builds a key from components.
#[derive(Default)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Self {
        Key(Vec::with_capacity(40))
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u128(mut self, v: u128) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A number in as few bytes as it needs: their count (1–8), then the bytes big-endian.
    /// Prefix-free, and it sorts as the numbers do (a longer number is a larger one).
    pub fn compact(mut self, v: u64) -> Self {
        let len = (8 - v.leading_zeros() as usize / 8).max(1);
        self.0.push(len as u8);
        self.0.extend_from_slice(&v.to_be_bytes()[8 - len..]);
        self
    }
    /// A string component; terminated so that "ab" sorts before "abc..." within one prefix.
    pub fn str(mut self, v: &str) -> Self {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// A message's key as stores written before [`short_message`] keyed rows and claims:
/// `(tenant, campaign, bucket, id)`, 36 bytes (`migrate` reads them; tests write them).
#[cfg(test)]
pub fn message(k: &schemas::MessageKey) -> Vec<u8> {
    Key::new().u64(k.tenant.0).u64(k.campaign.0).u32(k.bucket).u128(k.id.0).build()
}

/// Bytes of a message id kept in a [`short_message`] key: its top 96 bits. The other 32 are
/// the row's [`id_check`], stored in front of its value.
pub const SHORT_ID_BYTES: usize = 12;

/// A message's key in the per-message keyspaces (rows, claims): `(tenant, campaign, bucket)`
/// as [`Key::compact`] numbers, then the id's top 96 bits. 20 bytes while tenant ids stay below
/// 2^8, campaign ids and buckets below 2^16 — byteview's inline size, so a memtable compares and
/// a compaction copies these keys in place instead of following (and keeping alive) a pointer
/// to a block: ~11% of the engine's CPU per message against [`message`]'s 36 bytes
/// (ARCHITECTURE.md). Larger ids only make the key longer. Order within a campaign is still
/// `(bucket, id)`, so a campaign writes them roughly in ascending order.
pub fn short_message(k: &schemas::MessageKey) -> Vec<u8> {
    let mut key = short_bucket(k.tenant, k.campaign, k.bucket);
    key.extend_from_slice(&k.id.0.to_be_bytes()[..SHORT_ID_BYTES]);
    key
}

/// The `(tenant, campaign, bucket)` prefix of [`short_message`] keys.
pub fn short_bucket(tenant: schemas::TenantId, campaign: schemas::CampaignId, bucket: u32) -> Vec<u8> {
    Key::new().compact(tenant.0).compact(campaign.0).compact(u64::from(bucket)).build()
}

/// The `(tenant, campaign)` prefix of [`short_message`] keys.
pub fn short_campaign(tenant: schemas::TenantId, campaign: schemas::CampaignId) -> Vec<u8> {
    Key::new().compact(tenant.0).compact(campaign.0).build()
}

/// The `tenant` prefix of [`short_message`] keys.
pub fn short_tenant(tenant: schemas::TenantId) -> Vec<u8> {
    Key::new().compact(tenant.0).build()
}

/// The 32 bits of a message id that a [`short_message`] key leaves out.
pub fn id_check(id: schemas::MessageId) -> u32 {
    id.0 as u32
}

/// What a [`short_message`] key holds: `(tenant, campaign, bucket, the id's top 96 bits)`, the
/// id shifted back into place with its low 32 bits zero. `None` for a key of another shape.
pub fn parse_short_message(key: &[u8]) -> Option<(schemas::TenantId, schemas::CampaignId, u32, u128)> {
    let (tenant, at) = read_compact(key, 0)?;
    let (campaign, at) = read_compact(key, at)?;
    let (bucket, at) = read_compact(key, at)?;
    let id: [u8; SHORT_ID_BYTES] = key.get(at..)?.try_into().ok()?;
    let mut full = [0u8; 16];
    full[..SHORT_ID_BYTES].copy_from_slice(&id);
    Some((
        schemas::TenantId(tenant),
        schemas::CampaignId(campaign),
        u32::try_from(bucket).ok()?,
        u128::from_be_bytes(full),
    ))
}

/// Reads the [`Key::compact`] number at `at`: the number and where the next component starts.
pub fn read_compact(key: &[u8], at: usize) -> Option<(u64, usize)> {
    let len = usize::from(*key.get(at)?);
    if !(1..=8).contains(&len) {
        return None;
    }
    let bytes = key.get(at + 1..at + 1 + len)?;
    let mut buf = [0u8; 8];
    buf[8 - len..].copy_from_slice(bytes);
    Some((u64::from_be_bytes(buf), at + 1 + len))
}

/// Where a [`message`] key's bucket starts, after `(tenant, campaign)`.
pub const MESSAGE_BUCKET_AT: usize = 16;
/// Length of a [`message`] key's `(tenant, campaign, bucket)` prefix; the id follows.
pub const MESSAGE_BUCKET_PREFIX: usize = MESSAGE_BUCKET_AT + 4;

/// The smallest key greater than every key starting with `prefix` (None: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Reads the big-endian u64 at `at` (keys are written by [`Key`], so lengths are known).
pub fn read_u64(key: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&key[at..at + 8]);
    u64::from_be_bytes(buf)
}

pub fn read_u32(key: &[u8], at: usize) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&key[at..at + 4]);
    u32::from_be_bytes(buf)
}

pub fn read_u128(key: &[u8], at: usize) -> u128 {
    let mut buf = [0u8; 16];
    buf.copy_from_slice(&key[at..at + 16]);
    u128::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        let k = Key::new().u64(7).u32(1).build();
        assert!(k.as_slice() < prefix_end(&Key::new().u64(7).build()).unwrap().as_slice());
    }

    #[test]
    fn compact_numbers_sort_as_numbers_and_read_back() {
        let values = [0u64, 1, 255, 256, 65_535, 65_536, 1 << 40, u64::MAX - 1, u64::MAX];
        for pair in values.windows(2) {
            let (a, b) = (Key::new().compact(pair[0]).build(), Key::new().compact(pair[1]).build());
            assert!(a < b, "{} sorts before {}", pair[0], pair[1]);
        }
        for v in values {
            let k = Key::new().compact(v).u32(9).build();
            assert_eq!(read_compact(&k, 0), Some((v, k.len() - 4)));
        }
        assert_eq!(read_compact(&[0], 0), None);
        assert_eq!(read_compact(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0), None);
        assert_eq!(read_compact(&[2, 1], 0), None, "cut short");
    }

    #[test]
    fn short_message_keys_are_20_bytes_for_small_ids_and_parse_back() {
        use schemas::{CampaignId, MessageId, MessageKey, TenantId};
        let id = MessageId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let key = MessageKey { tenant: TenantId(4), campaign: CampaignId(40_000), bucket: 999, id };
        let k = short_message(&key);
        assert_eq!(k.len(), 20, "byteview's inline size");
        assert!(k.starts_with(&short_bucket(key.tenant, key.campaign, key.bucket)));
        assert!(k.starts_with(&short_campaign(key.tenant, key.campaign)));
        assert!(k.starts_with(&short_tenant(key.tenant)));
        assert_eq!(parse_short_message(&k), Some((key.tenant, key.campaign, 999, id.0 >> 32 << 32)));
        assert_eq!((id.0 >> 32 << 32) | u128::from(id_check(id)), id.0, "key and check hold the whole id");
        // Larger ids make the key longer, never ambiguous.
        let big = MessageKey { tenant: TenantId(u64::MAX), campaign: CampaignId(1 << 33), bucket: u32::MAX, ..key };
        assert_eq!(
            parse_short_message(&short_message(&big)),
            Some((big.tenant, big.campaign, u32::MAX, id.0 >> 32 << 32))
        );
        // (bucket, id) order within a campaign, and a tenant's keys under its prefix only.
        let later = MessageKey { bucket: 1_000, id: MessageId(0), ..key };
        assert!(short_message(&key) < short_message(&later));
        let other = MessageKey { tenant: TenantId(5), ..key };
        assert!(!short_message(&other).starts_with(&short_tenant(key.tenant)));
        assert_eq!(parse_short_message(&k[..19]), None);
    }
}
