//! Lookups: records by slot, the interval search trees (longest-prefix match, precomputed
//! by the agent), and expiry chains.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use mssp_common::abi::{
    CHAIN_MAX_LINKS, LEAF4_KEYS, LEAF4_VALUES, LEAF6_KEYS, LEAF6_VALUE_WORD, NODE4_KEYS,
    NODE6_KEYS, Node4, Node6, Record, TREE_EMPTY, TREE4_MAX_HEIGHT, TREE6_MAX_HEIGHT, Tree, value,
};

use crate::maps::{CHAIN, CUR, NODES4, NODES6, RECORDS};

/// A map read that cannot fail unless the agent published something inconsistent.
pub struct Internal;

/// The live record of `slot`, or `None` when the slot has none.
#[inline(always)]
pub fn record(slot: u32) -> Result<Option<&'static Record>, Internal> {
    let cur = CUR.get_ptr(slot).ok_or(Internal)?;
    // A single aligned 32-bit load: the agent switches a slot with one store.
    let idx = unsafe { core::ptr::read_volatile(cur) };
    if idx == 0 {
        return Ok(None);
    }
    let rec = RECORDS.get(idx).ok_or(Internal)?;
    Ok(Some(rec))
}

// Key comparisons are branch-free arithmetic. BPF has no conditional move, so a plain `a < b`
// becomes a branch, and 31 branches per node give the verifier 2^31 paths to walk (it
// refused the program at a million instructions). The address goes through `black_box` so
// LLVM cannot turn the arithmetic back into a compare-and-branch.

/// 1 if `k < x`, for `k` < 2^32 and `x` < 2^32 (the difference goes negative exactly then).
#[inline(always)]
pub(crate) fn lt32(k: u32, x: u64) -> u32 {
    ((k as u64).wrapping_sub(x) >> 63) as u32
}

/// 1 if `a - b - borrow` borrows, i.e. `a < b + borrow`, for any 64-bit `a`, `b` and a
/// borrow of 0 or 1 (the full-subtractor borrow, Hacker's Delight 2-13).
#[inline(always)]
fn borrow64(a: u64, b: u64, borrow: u64) -> u64 {
    let d = a.wrapping_sub(b).wrapping_sub(borrow);
    ((!a & b) | (!(a ^ b) & d)) >> 63
}

/// 1 if the key `(khi, klo)` is below `addr`: the borrow out of a 128-bit subtraction.
#[inline(always)]
pub(crate) fn lt128(khi: u64, klo: u64, addr: (u64, u64)) -> u64 {
    borrow64(khi, addr.0, borrow64(klo, addr.1, 0))
}

/// The value of the interval containing `addr` (0 outside every prefix).
///
/// An empty tree (no infrastructure, no global list: most policies) is answered here, without
/// the call.
#[inline(always)]
pub fn tree4(tree: &Tree, addr: u32) -> Result<u32, Internal> {
    if tree.root == TREE_EMPTY {
        return Ok(0);
    }
    let first = NODES4.get(tree.root).ok_or(Internal)?;
    walk4(first, tree.height, addr)
}

/// [`tree4`] for a record's source list, from the root node's copy in the record
/// ([`Record::src4_head`]): the record's lines and the root's are fetched together.
#[inline(always)]
pub fn src4(rec: &Record, addr: u32) -> Result<u32, Internal> {
    if rec.src4.root == TREE_EMPTY {
        return Ok(0);
    }
    walk4(&rec.src4_head, rec.src4.height, addr)
}

/// The child `addr` takes at an internal node, relative to its first child.
#[inline(always)]
fn pick4(node: &Node4, addr: u64) -> u32 {
    let mut c = 0u32;
    for i in 0..NODE4_KEYS {
        c += lt32(node.w[1 + i], addr);
    }
    c
}

/// The position in a leaf of the value `addr` takes.
#[inline(always)]
pub(crate) fn leaf4_pos(leaf: &Node4, addr: u64) -> usize {
    let mut c = 0usize;
    for i in 0..LEAF4_KEYS {
        c += lt32(leaf.w[LEAF4_VALUES + i], addr) as usize;
    }
    c & (LEAF4_VALUES - 1)
}

/// The index in `NODES4` of the leaf `addr` falls in, below `first`, an internal node
/// (`height` >= 1) wherever it sits.
#[inline(always)]
pub(crate) fn descend4(first: &Node4, height: u32, addr: u64) -> Result<u32, Internal> {
    let mut idx = first.w[0].wrapping_add(pick4(first, addr));
    for level in 1..TREE4_MAX_HEIGHT {
        if level >= height {
            break;
        }
        let node = NODES4.get(idx).ok_or(Internal)?;
        idx = node.w[0].wrapping_add(pick4(node, addr));
    }
    Ok(idx)
}

/// The descent from `first` (the root node, wherever it sits) through `height` internal
/// levels to the leaf.
///
/// Not inlined: the descent's spills get a frame of their own, which keeps the main
/// function's stack small enough for the rule loop's call chain (512 bytes in all).
#[inline(never)]
fn walk4(first: &Node4, height: u32, addr: u32) -> Result<u32, Internal> {
    let addr = core::hint::black_box(addr as u64);
    if height == 0 {
        return Ok(first.w[leaf4_pos(first, addr)]);
    }
    let leaf = NODES4.get(descend4(first, height, addr)?).ok_or(Internal)?;
    Ok(leaf.w[leaf4_pos(leaf, addr)])
}

/// The benchmark's breakdown: reads the first word of a record's source root (its copy in
/// the record) and nothing else.
#[inline(never)]
pub fn touch_head(v6: bool, rec: &Record) -> u32 {
    if v6 {
        unsafe { core::ptr::read_volatile(&rec.src6_head.w[0]) as u32 }
    } else {
        unsafe { core::ptr::read_volatile(&rec.src4_head.w[0]) }
    }
}

/// IPv6 version of [`tree4`].
#[inline(always)]
pub fn tree6(tree: &Tree, addr: (u64, u64)) -> Result<u32, Internal> {
    if tree.root == TREE_EMPTY {
        return Ok(0);
    }
    let first = NODES6.get(tree.root).ok_or(Internal)?;
    walk6(first, tree.height, addr)
}

/// IPv6 version of [`src4`] ([`Record::src6_head`]).
#[inline(always)]
pub fn src6(rec: &Record, addr: (u64, u64)) -> Result<u32, Internal> {
    if rec.src6.root == TREE_EMPTY {
        return Ok(0);
    }
    walk6(&rec.src6_head, rec.src6.height, addr)
}

#[inline(always)]
fn pick6(node: &Node6, addr: (u64, u64)) -> u32 {
    let mut c = 0u32;
    for i in 0..NODE6_KEYS {
        c += lt128(node.w[2 + 2 * i], node.w[3 + 2 * i], addr) as u32;
    }
    c
}

/// The position in a leaf of the value `addr` takes (at most `LEAF6_KEYS`).
#[inline(always)]
pub(crate) fn leaf6_pos(leaf: &Node6, addr: (u64, u64)) -> usize {
    let mut c = 0usize;
    for i in 0..LEAF6_KEYS {
        c += lt128(leaf.w[2 * i], leaf.w[2 * i + 1], addr) as usize;
    }
    c
}

/// The value at position `c` of a leaf: values sit two per word from `LEAF6_VALUE_WORD`
/// (the mask keeps the word inside the node for the verifier; `c` is at most 12).
#[inline(always)]
pub(crate) fn leaf6_value(leaf: &Node6, c: usize) -> u32 {
    let word = leaf.w[LEAF6_VALUE_WORD + ((c >> 1) & 7)];
    (word >> (32 * (c & 1))) as u32
}

/// IPv6 version of [`descend4`].
#[inline(always)]
pub(crate) fn descend6(first: &Node6, height: u32, addr: (u64, u64)) -> Result<u32, Internal> {
    let mut idx = (first.w[0] as u32).wrapping_add(pick6(first, addr));
    for level in 1..TREE6_MAX_HEIGHT {
        if level >= height {
            break;
        }
        let node = NODES6.get(idx).ok_or(Internal)?;
        idx = (node.w[0] as u32).wrapping_add(pick6(node, addr));
    }
    Ok(idx)
}

#[inline(never)]
fn walk6(first: &Node6, height: u32, addr: (u64, u64)) -> Result<u32, Internal> {
    let addr = (core::hint::black_box(addr.0), core::hint::black_box(addr.1));
    if height == 0 {
        return Ok(leaf6_value(first, leaf6_pos(first, addr)));
    }
    let leaf = NODES6.get(descend6(first, height, addr)?).ok_or(Internal)?;
    Ok(leaf6_value(leaf, leaf6_pos(leaf, addr)))
}

/// Follows an expiry chain to the first link that is still in force; plain values pass
/// through untouched (the clock is read only for chains).
#[inline(always)]
pub fn resolve(v: u32) -> Result<u32, Internal> {
    if !value::is_chain(v) {
        return Ok(v);
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut link = value::id(v);
    for _ in 0..CHAIN_MAX_LINKS {
        let l = CHAIN.get(link).ok_or(Internal)?;
        if now < l.expires_boot_ns {
            return Ok(l.value);
        }
        if l.next == 0 {
            return Ok(0);
        }
        link = l.next - 1;
    }
    Ok(0)
}
