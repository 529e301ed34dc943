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

/// A message's key in every keyspace keyed per message (rows, claims): `(tenant, campaign,
/// bucket, id)`. Buckets follow the audience's recipient order, so a campaign writes these keys
/// roughly in ascending order and a flushed table covers a narrow range of its campaign.
pub fn message(k: &schemas::MessageKey) -> Vec<u8> {
    Key::new().u64(k.tenant.0).u64(k.campaign.0).u32(k.bucket).u128(k.id.0).build()
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
}
