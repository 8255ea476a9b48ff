//! Stable small integers for things that own a counter: source entries (hit counters) and
//! rules and customer limits (rule counters, token buckets). An id stays with its key while the
//! key exists, so counters keep counting across policy updates and agent restarts.

use std::{collections::HashMap, hash::Hash};

/// Allocator of ids `1..capacity` (0 means "none" in the data path).
#[derive(Clone, Debug)]
pub struct Ids<K> {
    name: &'static str,
    capacity: u32,
    by_key: HashMap<K, u32>,
    by_id: HashMap<u32, K>,
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
            by_key: HashMap::new(),
            by_id: HashMap::new(),
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

    pub fn get(&self, k: &K) -> Option<u32> {
        self.by_key.get(k).copied()
    }

    pub fn key(&self, id: u32) -> Option<&K> {
        self.by_id.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, u32)> {
        self.by_key.iter().map(|(k, v)| (k, *v))
    }

    /// Assigns an id to a new key: `Some((id, recycled))`, or None when all are taken.
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
        self.by_key.insert(k, id.0);
        self.by_id.insert(id.0, k);
        Some(id)
    }

    pub fn release(&mut self, k: &K) -> Option<u32> {
        let id = self.by_key.remove(k)?;
        self.by_id.remove(&id);
        self.recycled.push(id);
        Some(id)
    }

    /// Keys not in `keep`.
    pub fn others(&self, keep: &std::collections::HashSet<K>) -> Vec<K> {
        self.by_key
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect()
    }

    /// Restores assignments read from the id log.
    pub fn restore(&mut self, entries: &[(K, u32)]) -> Result<(), String> {
        let mut max = 0;
        for (k, id) in entries {
            if *id == 0 || *id >= self.capacity || self.by_id.contains_key(id) {
                return Err(format!(
                    "the id log assigns {} id {id} twice or out of range",
                    self.name
                ));
            }
            self.by_key.insert(*k, *id);
            self.by_id.insert(*id, *k);
            max = max.max(*id);
        }
        self.next = max + 1;
        self.recycled = (1..self.next)
            .filter(|i| !self.by_id.contains_key(i))
            .collect();
        Ok(())
    }

    pub fn table(&self) -> Vec<(K, u32)> {
        let mut v: Vec<(K, u32)> = self.by_key.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable_by_key(|(_, id)| *id);
        v
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
        let mut fresh: Ids<u8> = Ids::new("f", 10, true);
        fresh.assign(1);
        fresh.release(&1);
        assert_eq!(fresh.assign(2), Some((2, false)), "fresh first");
        let mut r: Ids<u8> = Ids::new("r", 10, false);
        r.restore(&[(7, 3), (8, 5)]).unwrap();
        assert_eq!(r.assign(9), Some((4, true)));
        assert!(r.restore(&[(1, 3)]).is_err());
    }
}
