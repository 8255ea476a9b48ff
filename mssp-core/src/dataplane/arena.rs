//! Allocation of contiguous index ranges inside a map used as an arena (tree nodes, chain
//! links, records). Best fit with coalescing; the agent rebuilds it from the live records
//! after a restart.

use std::collections::BTreeMap;

pub use mssp_common::abi::Span;

#[derive(Clone, Debug)]
pub struct Arena {
    name: &'static str,
    capacity: u32,
    /// start -> len of every free range, never adjacent to another.
    free: BTreeMap<u32, u32>,
    used: u32,
}

/// The arena has no free range large enough.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "map {name} is full: {wanted} more entries needed, {free} free in all ({largest} contiguous) of {capacity}"
)]
pub struct ArenaFull {
    pub name: &'static str,
    pub wanted: u32,
    pub free: u32,
    pub largest: u32,
    pub capacity: u32,
}

impl Arena {
    /// An arena of `capacity` entries, of which the first `reserved` are never handed out.
    pub fn new(name: &'static str, capacity: u32, reserved: u32) -> Arena {
        let mut free = BTreeMap::new();
        if capacity > reserved {
            free.insert(reserved, capacity - reserved);
        }
        Arena {
            name,
            capacity,
            free,
            used: reserved.min(capacity),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn free_total(&self) -> u32 {
        self.capacity - self.used
    }

    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }

    pub fn alloc(&mut self, len: u32) -> Result<Span, ArenaFull> {
        if len == 0 {
            return Ok(Span::default());
        }
        let best = self
            .free
            .iter()
            .filter(|&(_, &l)| l >= len)
            .min_by_key(|&(_, &l)| l)
            .map(|(&s, &l)| (s, l));
        let Some((start, flen)) = best else {
            return Err(ArenaFull {
                name: self.name,
                wanted: len,
                free: self.free_total(),
                largest: self.largest_free(),
                capacity: self.capacity,
            });
        };
        self.free.remove(&start);
        if flen > len {
            self.free.insert(start + len, flen - len);
        }
        self.used += len;
        Ok(Span { start, len })
    }

    pub fn release(&mut self, r: Span) {
        if r.len == 0 {
            return;
        }
        debug_assert!(r.start + r.len <= self.capacity);
        let mut start = r.start;
        let mut len = r.len;
        if let Some((&ps, &pl)) = self.free.range(..start).next_back()
            && ps + pl == start
        {
            self.free.remove(&ps);
            start = ps;
            len += pl;
        }
        if let Some(&nl) = self.free.get(&(r.start + r.len)) {
            self.free.remove(&(r.start + r.len));
            len += nl;
        }
        self.free.insert(start, len);
        self.used -= r.len;
    }

    /// Marks a range found in use (re-adoption). Fails if any of it is already taken.
    pub fn claim(&mut self, r: Span) -> Result<(), String> {
        if r.len == 0 {
            return Ok(());
        }
        let Some((&fs, &fl)) = self.free.range(..=r.start).next_back() else {
            return Err(format!(
                "{}: range {}+{} is not free",
                self.name, r.start, r.len
            ));
        };
        if fs + fl < r.start + r.len {
            return Err(format!(
                "{}: range {}+{} is not free",
                self.name, r.start, r.len
            ));
        }
        self.free.remove(&fs);
        if r.start > fs {
            self.free.insert(fs, r.start - fs);
        }
        if fs + fl > r.start + r.len {
            self.free.insert(r.start + r.len, fs + fl - r.start - r.len);
        }
        self.used += r.len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_coalesce() {
        let mut a = Arena::new("T", 100, 1);
        let x = a.alloc(10).unwrap();
        let y = a.alloc(20).unwrap();
        let z = a.alloc(30).unwrap();
        assert_eq!(x.start, 1);
        assert_eq!(a.used(), 61);
        a.release(y);
        assert_eq!(a.largest_free(), 39);
        // Best fit takes the hole, not the tail.
        let w = a.alloc(15).unwrap();
        assert_eq!(w.start, y.start);
        a.release(w);
        a.release(x);
        a.release(z);
        assert_eq!(a.used(), 1);
        assert_eq!(a.largest_free(), 99);
        let e = a.alloc(100).unwrap_err();
        assert_eq!(e.free, 99);
        assert!(e.to_string().contains("map T is full"));
    }

    #[test]
    fn claim() {
        let mut a = Arena::new("T", 100, 0);
        a.claim(Span { start: 10, len: 5 }).unwrap();
        a.claim(Span { start: 0, len: 10 }).unwrap();
        assert!(a.claim(Span { start: 12, len: 1 }).is_err());
        assert_eq!(a.alloc(1).unwrap().start, 15);
        a.release(Span { start: 0, len: 15 });
        assert_eq!(a.alloc(15).unwrap().start, 0);
    }
}
