//! Stable small integers for things that own a counter: source entries (hit counters) and
//! rules and customer limits (rule counters, token buckets). An id stays with its key while the
//! key exists, so counters keep counting across policy updates and agent restarts.
//!
//! Which ids a policy still uses is tracked with an epoch stamp per id rather than a set of
//! keys: a million-entry apply then costs a million array writes instead of a million hash
//! insertions.

use std::hash::{BuildHasher, Hash};

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Allocator of ids `1..capacity` (0 means "none" in the data path).
#[derive(Clone, Debug)]
pub struct Ids<K> {
    name: &'static str,
    capacity: u32,
    /// The ids, hashed by their keys (which live in `by_id` only): a key is 48 bytes, and a
    /// map holding keys and ids took ~130 MiB at a million entries; this takes ~10.
    by_key: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Index = id.
    by_id: Vec<Option<K>>,
    /// Index = id: the epoch in which the id was last used.
    stamp: Vec<u32>,
    epoch: u32,
    recycled: Vec<u32>,
    next: u32,
    /// Use never-used ids before recycled ones (state keyed by the id outside the allocator,
    /// such as per-source buckets, then takes long to meet a new owner).
    fresh_first: bool,
}

impl<K: Copy + Eq + Hash> Ids<K> {
    pub fn new(name: &'static str, capacity: u32, fresh_first: bool) -> Ids<K> {
        Ids {
            name,
            capacity,
            by_key: hashbrown::HashTable::new(),
            hasher: Default::default(),
            by_id: vec![None],
            stamp: vec![0],
            epoch: 0,
            recycled: Vec::new(),
            next: 1,
            fresh_first,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Room for `n` more keys without rehashing.
    pub fn reserve(&mut self, n: usize) {
        let (by_id, hasher) = (&self.by_id, &self.hasher);
        self.by_key
            .reserve(n, |&id| hasher.hash_one(by_id[id as usize].as_ref()));
    }

    pub fn get(&self, k: &K) -> Option<u32> {
        let by_id = &self.by_id;
        self.by_key
            .find(self.hasher.hash_one(Some(k)), |&id| {
                by_id[id as usize].as_ref() == Some(k)
            })
            .copied()
    }

    pub fn key(&self, id: u32) -> Option<&K> {
        self.by_id.get(id as usize).and_then(Option::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, u32)> {
        self.by_id
            .iter()
            .enumerate()
            .filter_map(|(id, k)| k.as_ref().map(|k| (k, id as u32)))
    }

    /// Starts a new round of [`Ids::touch`]: nothing counts as used until touched again.
    pub fn begin(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // After 2^32 rounds: clear the stamps so an old one cannot look current.
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.epoch = 1;
        }
    }

    /// Marks `id` as used in this round.
    pub fn touch(&mut self, id: u32) {
        if let Some(s) = self.stamp.get_mut(id as usize) {
            *s = self.epoch;
        }
    }

    /// The id of `k`, assigning one if it has none (`(id, recycled)`); touched either way.
    /// `None` when every id is taken.
    pub fn get_or_assign(&mut self, k: K) -> Option<(u32, Option<bool>)> {
        if let Some(id) = self.get(&k) {
            self.touch(id);
            return Some((id, None));
        }
        let (id, recycled) = self.assign(k)?;
        Some((id, Some(recycled)))
    }

    /// Assigns an id to a new key: `Some((id, recycled))`, or None when all are taken. The id
    /// counts as used in this round.
    pub fn assign(&mut self, k: K) -> Option<(u32, bool)> {
        let fresh = |s: &mut Self| {
            (s.next < s.capacity).then(|| {
                s.next += 1;
                (s.next - 1, false)
            })
        };
        let id = if self.fresh_first {
            fresh(self).or_else(|| self.recycled.pop().map(|i| (i, true)))
        } else {
            self.recycled
                .pop()
                .map(|i| (i, true))
                .or_else(|| fresh(self))
        }?;
        self.set(id.0, k);
        self.touch(id.0);
        Some(id)
    }

    fn set(&mut self, id: u32, k: K) {
        let i = id as usize;
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
            self.stamp.resize(i + 1, 0);
        }
        self.by_id[i] = Some(k);
        let (by_id, hasher) = (&self.by_id, &self.hasher);
        self.by_key
            .insert_unique(hasher.hash_one(Some(&k)), id, |&id| {
                hasher.hash_one(by_id[id as usize].as_ref())
            });
    }

    pub fn release(&mut self, k: &K) -> Option<u32> {
        let by_id = &self.by_id;
        let entry = self
            .by_key
            .find_entry(self.hasher.hash_one(Some(k)), |&id| {
                by_id[id as usize].as_ref() == Some(k)
            })
            .ok()?;
        let (id, _) = entry.remove();
        self.by_id[id as usize] = None;
        self.recycled.push(id);
        Some(id)
    }

    /// Keys not touched since [`Ids::begin`].
    pub fn untouched(&self) -> Vec<K> {
        self.by_id
            .iter()
            .zip(&self.stamp)
            .filter(|(k, s)| k.is_some() && **s != self.epoch)
            .filter_map(|(k, _)| *k)
            .collect()
    }

    /// Restores assignments read from the id log.
    pub fn restore(&mut self, entries: &[(K, u32)]) -> Result<(), String> {
        let mut max = 0;
        self.reserve(entries.len());
        for (k, id) in entries {
            if *id == 0 || *id >= self.capacity || self.key(*id).is_some() {
                return Err(format!(
                    "the id log assigns {} id {id} twice or out of range",
                    self.name
                ));
            }
            if let Some(other) = self.get(k) {
                return Err(format!(
                    "the id log assigns one {} key two ids ({other} and {id})",
                    self.name
                ));
            }
            self.set(*id, *k);
            max = max.max(*id);
        }
        self.next = max + 1;
        self.recycled = (1..self.next).filter(|i| self.key(*i).is_none()).collect();
        Ok(())
    }

    pub fn table(&self) -> Vec<(K, u32)> {
        self.by_id
            .iter()
            .enumerate()
            .filter_map(|(id, k)| k.map(|k| (k, id as u32)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_release_restore() {
        let mut ids: Ids<u8> = Ids::new("t", 4, false);
        assert_eq!(ids.assign(1), Some((1, false)));
        assert_eq!(ids.assign(2), Some((2, false)));
        ids.release(&1);
        assert_eq!(ids.assign(3), Some((1, true)), "recycled first");
        assert_eq!(ids.assign(4), Some((3, false)));
        assert_eq!(ids.assign(5), None, "capacity 4 holds ids 1..=3");
        assert_eq!(ids.table(), vec![(3, 1), (2, 2), (4, 3)]);
        let mut fresh: Ids<u8> = Ids::new("f", 10, true);
        fresh.assign(1);
        fresh.release(&1);
        assert_eq!(fresh.assign(2), Some((2, false)), "fresh first");
        let mut r: Ids<u8> = Ids::new("r", 10, false);
        r.restore(&[(7, 3), (8, 5)]).unwrap();
        assert_eq!(r.assign(9), Some((4, true)));
        assert!(r.restore(&[(1, 3)]).is_err());
        let mut twice: Ids<u8> = Ids::new("r", 10, false);
        assert!(
            twice.restore(&[(7, 3), (7, 5)]).is_err(),
            "one key, two ids"
        );
    }

    #[test]
    fn rounds_of_touches() {
        let mut ids: Ids<u8> = Ids::new("t", 10, false);
        ids.begin();
        for k in 1..=4 {
            ids.get_or_assign(k);
        }
        assert!(ids.untouched().is_empty());
        ids.begin();
        assert_eq!(ids.get_or_assign(2), Some((2, None)));
        let id3 = ids.get(&3).unwrap();
        ids.touch(id3);
        let mut left = ids.untouched();
        left.sort();
        assert_eq!(left, vec![1, 4]);
        ids.release(&1);
        assert_eq!(ids.untouched(), vec![4]);
    }
}
