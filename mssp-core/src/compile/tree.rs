//! Intervals -> static search-tree nodes in the layout of `mssp_common::abi` ([`Node4`],
//! [`Node6`]). Trees are built with node indices relative to their region and relocated when
//! the region is placed in the arena.

use mssp_common::abi::{
    LEAF4_KEYS, LEAF4_VALUES, LEAF6_KEYS, LEAF6_VALUES, NODE4_FANOUT, NODE4_KEYS, NODE6_FANOUT,
    NODE6_KEYS, Node4, Node6, TREE4_MAX_HEIGHT, TREE6_MAX_HEIGHT,
};

/// What differs between the IPv4 and IPv6 node layouts.
pub trait NodeKind: Copy + std::fmt::Debug + PartialEq {
    const FANOUT: usize;
    const KEYS: usize;
    const LEAF_VALUES: usize;
    const LEAF_KEYS: usize;
    const MAX_HEIGHT: u32;
    const PAD: Self;
    /// `keys` are interval starts minus one; at most `KEYS` of them.
    fn internal(first_child: u32, keys: &[u128]) -> Self;
    /// `keys.len() + 1 == values.len()`, at most `LEAF_VALUES` values.
    fn leaf(keys: &[u128], values: &[u32]) -> Self;
    fn first_child(&self) -> u32;
    fn set_first_child(&mut self, child: u32);
    /// The child taken for `addr` (relative to `first_child`).
    fn pick_child(&self, addr: u128) -> u32;
    fn leaf_value(&self, addr: u128) -> u32;
    fn leaf_values(&self) -> Vec<u32>;
    fn set_leaf_values(&mut self, values: &[u32]);
}

impl NodeKind for Node4 {
    const FANOUT: usize = NODE4_FANOUT;
    const KEYS: usize = NODE4_KEYS;
    const LEAF_VALUES: usize = LEAF4_VALUES;
    const LEAF_KEYS: usize = LEAF4_KEYS;
    const MAX_HEIGHT: u32 = TREE4_MAX_HEIGHT;
    const PAD: Self = Node4::PAD;

    fn internal(first_child: u32, keys: &[u128]) -> Self {
        let mut n = Node4::PAD;
        n.w[0] = first_child;
        for (i, k) in keys.iter().enumerate() {
            n.w[1 + i] = *k as u32;
        }
        n
    }

    fn leaf(keys: &[u128], values: &[u32]) -> Self {
        let mut n = Node4::PAD;
        let last = *values.last().unwrap_or(&0);
        for i in 0..LEAF4_VALUES {
            n.w[i] = *values.get(i).unwrap_or(&last);
        }
        for (i, k) in keys.iter().enumerate() {
            n.w[LEAF4_VALUES + i] = *k as u32;
        }
        n
    }

    fn first_child(&self) -> u32 {
        self.w[0]
    }

    fn set_first_child(&mut self, child: u32) {
        self.w[0] = child;
    }

    fn pick_child(&self, addr: u128) -> u32 {
        (1..=NODE4_KEYS)
            .filter(|i| (self.w[*i] as u128) < addr)
            .count() as u32
    }

    fn leaf_value(&self, addr: u128) -> u32 {
        let c = (0..LEAF4_KEYS)
            .filter(|i| (self.w[LEAF4_VALUES + i] as u128) < addr)
            .count();
        self.w[c]
    }

    fn leaf_values(&self) -> Vec<u32> {
        self.w[..LEAF4_VALUES].to_vec()
    }

    fn set_leaf_values(&mut self, values: &[u32]) {
        self.w[..LEAF4_VALUES].copy_from_slice(values);
    }
}

fn key6(n: &Node6, word: usize) -> u128 {
    ((n.w[word] as u128) << 64) | n.w[word + 1] as u128
}

impl NodeKind for Node6 {
    const FANOUT: usize = NODE6_FANOUT;
    const KEYS: usize = NODE6_KEYS;
    const LEAF_VALUES: usize = LEAF6_VALUES;
    const LEAF_KEYS: usize = LEAF6_KEYS;
    const MAX_HEIGHT: u32 = TREE6_MAX_HEIGHT;
    const PAD: Self = Node6::PAD;

    fn internal(first_child: u32, keys: &[u128]) -> Self {
        let mut n = Node6::PAD;
        n.w[0] = first_child as u64;
        n.w[1] = 0;
        for (i, k) in keys.iter().enumerate() {
            n.w[2 + 2 * i] = (*k >> 64) as u64;
            n.w[3 + 2 * i] = *k as u64;
        }
        n
    }

    fn leaf(keys: &[u128], values: &[u32]) -> Self {
        let mut n = Node6::PAD;
        for (i, k) in keys.iter().enumerate() {
            n.w[2 * i] = (*k >> 64) as u64;
            n.w[2 * i + 1] = *k as u64;
        }
        let last = *values.last().unwrap_or(&0);
        for i in 0..LEAF6_VALUES {
            n.set_leaf_value(i, *values.get(i).unwrap_or(&last));
        }
        // The unused value slot beside the last one.
        n.set_leaf_value(LEAF6_VALUES, last);
        n
    }

    fn first_child(&self) -> u32 {
        self.w[0] as u32
    }

    fn set_first_child(&mut self, child: u32) {
        self.w[0] = child as u64;
    }

    fn pick_child(&self, addr: u128) -> u32 {
        (0..NODE6_KEYS)
            .filter(|i| key6(self, 2 + 2 * i) < addr)
            .count() as u32
    }

    fn leaf_value(&self, addr: u128) -> u32 {
        let c = (0..LEAF6_KEYS).filter(|i| key6(self, 2 * i) < addr).count();
        Node6::leaf_value(self, c)
    }

    fn leaf_values(&self) -> Vec<u32> {
        (0..LEAF6_VALUES)
            .map(|i| Node6::leaf_value(self, i))
            .collect()
    }

    fn set_leaf_values(&mut self, values: &[u32]) {
        for (i, v) in values.iter().enumerate() {
            self.set_leaf_value(i, *v);
        }
    }
}

/// A built tree whose node indices are relative to its first node (the root).
#[derive(Clone, Debug, PartialEq)]
pub struct Built<N> {
    pub nodes: Vec<N>,
    /// Internal levels above the leaves.
    pub height: u32,
    /// Index of the first leaf in `nodes` (leaves are last).
    pub leaf_start: usize,
}

impl<N: NodeKind> Built<N> {
    /// A tree with no nodes: every lookup gives 0.
    pub fn empty() -> Self {
        Built {
            nodes: Vec::new(),
            height: 0,
            leaf_start: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Builds the tree of `intervals` (sorted, first start 0, as `sweep` returns them).
    pub fn build(intervals: &[(u128, u32)]) -> Self {
        if intervals.len() == 1 && intervals[0].1 == 0 {
            return Self::empty();
        }
        // Leaves.
        let mut levels: Vec<Vec<N>> = Vec::new();
        let mut firsts: Vec<u128> = Vec::new();
        let mut leaves = Vec::with_capacity(intervals.len().div_ceil(N::LEAF_VALUES));
        for chunk in intervals.chunks(N::LEAF_VALUES) {
            let keys: Vec<u128> = chunk[1..].iter().map(|(s, _)| s - 1).collect();
            let values: Vec<u32> = chunk.iter().map(|(_, v)| *v).collect();
            leaves.push(N::leaf(&keys, &values));
            firsts.push(chunk[0].0);
        }
        levels.push(leaves);
        // Internal levels; first_child is temporarily relative to the child level.
        while levels.last().is_some_and(|l| l.len() > 1) {
            let mut parents = Vec::new();
            let mut parent_firsts = Vec::new();
            for (j, chunk) in firsts.chunks(N::FANOUT).enumerate() {
                let keys: Vec<u128> = chunk[1..].iter().map(|s| s - 1).collect();
                parents.push(N::internal((j * N::FANOUT) as u32, &keys));
                parent_firsts.push(chunk[0]);
            }
            levels.push(parents);
            firsts = parent_firsts;
        }
        let height = levels.len() as u32 - 1;
        // Lay out root level first; fix first_child to indices within the region.
        levels.reverse();
        let mut offsets = Vec::with_capacity(levels.len());
        let mut at = 0usize;
        for l in &levels {
            offsets.push(at);
            at += l.len();
        }
        let mut nodes = Vec::with_capacity(at);
        for (li, level) in levels.iter().enumerate() {
            for n in level {
                let mut n = *n;
                if li + 1 < levels.len() {
                    n.set_first_child(n.first_child() + offsets[li + 1] as u32);
                }
                nodes.push(n);
            }
        }
        Built {
            nodes,
            height,
            leaf_start: *offsets.last().unwrap_or(&0),
        }
    }

    /// Makes internal child indices absolute for a region starting at `base`.
    pub fn relocate(&mut self, base: u32) {
        for n in &mut self.nodes[..self.leaf_start] {
            n.set_first_child(n.first_child() + base);
        }
    }

    /// Rewrites every leaf value with `f`.
    pub fn map_leaf_values(&mut self, mut f: impl FnMut(u32) -> u32) {
        for n in &mut self.nodes[self.leaf_start..] {
            let vals: Vec<u32> = n.leaf_values().into_iter().map(&mut f).collect();
            n.set_leaf_values(&vals);
        }
    }

    /// Lookup over relative indices, mirroring the data path (for tests without a kernel).
    pub fn lookup(&self, addr: u128) -> u32 {
        if self.nodes.is_empty() {
            return 0;
        }
        let mut idx = 0u32;
        for _ in 0..self.height {
            let n = &self.nodes[idx as usize];
            idx = n.first_child() + n.pick_child(addr);
        }
        self.nodes[idx as usize].leaf_value(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::intervals::value_at;

    fn check<N: NodeKind>(intervals: &[(u128, u32)], probes: &[u128]) {
        let t = Built::<N>::build(intervals);
        assert!(t.height <= N::MAX_HEIGHT);
        for &a in probes {
            assert_eq!(t.lookup(a), value_at(intervals, a), "addr {a:#x}");
        }
    }

    fn many(n: usize, step: u128) -> Vec<(u128, u32)> {
        (0..n)
            .map(|i| (i as u128 * step, (i % 7) as u32 + 1))
            .collect()
    }

    #[test]
    fn sizes_around_every_boundary() {
        for n in [
            1, 2, 13, 14, 15, 16, 17, 31, 32, 33, 208, 209, 511, 512, 513, 5000, 20_000,
        ] {
            let iv = many(n, 3);
            let probes: Vec<u128> = (0..(n as u128 * 3 + 4)).collect();
            check::<Node4>(&iv, &probes);
            check::<Node6>(&iv, &probes);
        }
    }

    #[test]
    fn extremes() {
        let iv = vec![(0, 1), (u32::MAX as u128, 2)];
        check::<Node4>(&iv, &[0, 1, u32::MAX as u128 - 1, u32::MAX as u128]);
        let iv = vec![(0, 0), (u128::MAX, 2)];
        check::<Node6>(&iv, &[0, 1, u128::MAX - 1, u128::MAX]);
        let iv = vec![(0, 0), (1u128 << 64, 3), ((1u128 << 64) + 1, 0)];
        check::<Node6>(
            &iv,
            &[(1 << 64) - 1, 1 << 64, (1 << 64) + 1, u64::MAX as u128],
        );
    }

    #[test]
    fn relocation_keeps_lookups() {
        let iv = many(2000, 5);
        let t = Built::<Node4>::build(&iv);
        let mut moved = t.clone();
        moved.relocate(1000);
        // Absolute indices: a lookup starting at 1000 in an arena with 1000 pad nodes in front.
        let mut arena = vec![Node4::PAD; 1000];
        arena.extend_from_slice(&moved.nodes);
        for a in (0..10_000u128).step_by(7) {
            let mut idx = 1000u32;
            for _ in 0..moved.height {
                let n = &arena[idx as usize];
                idx = n.first_child() + n.pick_child(a);
            }
            assert_eq!(NodeKind::leaf_value(&arena[idx as usize], a), t.lookup(a));
        }
    }
}
