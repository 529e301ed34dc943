//! A bounded map of what was seen lately: two generations of at most `generation` entries
//! each; when the current one fills, the older is dropped (its table reused, so a rotation
//! faults in no fresh pages). Memory is bounded by the generation size, never by traffic.
//!
//! Used where a single owner keeps what it just wrote so the next read need not go to the
//! store (deliver's in-flight claims, reconcile's recent message rows). It is a cache: a miss
//! reads the store, and the owner clears it whenever the store may have changed behind it.
//!
//! [`IdHasher`] is for keys that are already hashes (message ids): it mixes words instead of
//! running SipHash over them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A hasher for keys made of ids that are already well mixed (see the module docs).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, word: u128) {
        self.write_u64(word as u64);
        self.write_u64((word >> 64) as u64);
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// See the module docs.
pub struct Generations<K, V> {
    generation: usize,
    current: Map<K, V>,
    previous: Map<K, V>,
}

impl<K: Eq + Hash, V: Clone> Generations<K, V> {
    pub fn new(generation: usize) -> Self {
        Self { generation: generation.max(1), current: Map::default(), previous: Map::default() }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.peek(key).cloned()
    }

    /// The value held for `key`, not copied.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Whether a value is held for `key`.
    pub fn holds(&self, key: &K) -> bool {
        self.current.contains_key(key) || self.previous.contains_key(key)
    }

    pub fn put(&mut self, key: K, value: V) {
        if self.current.len() >= self.generation && !self.current.contains_key(&key) {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(key, value);
    }

    /// Replaces `key`'s value where it is held, and holds nothing new: for writes that need
    /// not be read back soon, so that they do not push out entries that will be.
    pub fn refresh(&mut self, key: &K, value: V) {
        if let Some(held) = self.current.get_mut(key).or_else(|| self.previous.get_mut(key)) {
            *held = value;
        }
    }

    pub fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    /// Entries held (both generations).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_two_generations_and_forgets_the_oldest() {
        let mut seen = Generations::new(3);
        for i in 0..3u64 {
            seen.put(i, i * 10);
        }
        seen.put(2, 21);
        assert_eq!((seen.get(&0), seen.get(&2), seen.len()), (Some(0), Some(21), 3), "a replaced key takes no room");
        seen.put(3, 30);
        assert_eq!(seen.get(&0), Some(0), "the previous generation is still read");
        for i in 4..6u64 {
            seen.put(i, i * 10);
        }
        assert_eq!(seen.get(&3), Some(30));
        seen.put(6, 60);
        assert_eq!(seen.get(&0), None, "two generations later it is forgotten");
        assert_eq!(seen.len(), 4);
        seen.refresh(&4, 41);
        seen.refresh(&7, 70);
        assert_eq!((seen.get(&4), seen.get(&7), seen.len()), (Some(41), None, 4), "refresh holds nothing new");
        assert!(seen.holds(&4) && !seen.holds(&7));
        assert_eq!(seen.peek(&4), Some(&41));
        seen.put(5, 51);
        seen.refresh(&5, 52);
        assert_eq!(seen.get(&5), Some(52), "the copy a read finds is the one refreshed");
        seen.remove(&3);
        assert_eq!(seen.get(&3), None);
        seen.clear();
        assert!(seen.is_empty());
    }
}
