//! The benchmark's hit-cell probe (`STOP_AFTER` 5; pruned by the verifier in production):
//! what the entry's hit count would cost if its counter were keyed by the leaf's position
//! (one cell per leaf value) instead of by entry id. The cell's lines are known as soon as
//! the leaf's index is, so they are read before the leaf is and the two misses overlap; the
//! count then lands on a warm line. It measures that design's gain on this machine without
//! the agent's side of it (mapping cells back to entries), which is not built.

use mssp_common::abi::{Counter, LEAF4_VALUES, TREE_EMPTY, Tree};

use crate::{
    lookup::{self, Internal},
    maps::{HIT_CELLS, NODES4, NODES6},
};

/// Cells per CPU block of `HIT_CELLS` (load time).
#[unsafe(no_mangle)]
static CELLS_STRIDE: u32 = 1;

/// Cells per leaf: one per value, rounded up to a power of two.
const CELLS4: u32 = LEAF4_VALUES as u32;
const CELLS6: u32 = 16;

#[inline(always)]
fn cell(idx: u32) -> Option<*mut Counter> {
    let stride = unsafe { core::ptr::read_volatile(&CELLS_STRIDE) };
    // A node index past the loader's stride would land in the next CPU's block.
    if idx >= stride {
        return None;
    }
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    HIT_CELLS.get_ptr_mut(cpu.wrapping_mul(stride).wrapping_add(idx))
}

/// Reads one word of every cache line of a leaf's cells (`n` cells of 16 bytes from
/// `first`), so their misses start before the leaf's own.
#[inline(always)]
fn touch(first: u32, n: u32) -> u64 {
    let mut acc = 0u64;
    let mut i = 0;
    while i < n {
        if let Some(c) = cell(first + i) {
            acc = acc.wrapping_add(unsafe { core::ptr::read_volatile(&(*c).packets) });
        }
        i += 4;
    }
    if let Some(c) = cell(first + n - 1) {
        acc = acc.wrapping_add(unsafe { core::ptr::read_volatile(&(*c).packets) });
    }
    acc
}

/// Counts one packet in a cell.
#[inline(always)]
pub fn count(idx: u32, bytes: u64) {
    if let Some(c) = cell(idx) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// [`crate::lookup::tree4`]'s walk (from the arena's root), returning the value and its cell.
#[inline(never)]
pub fn walk4(tree: &Tree, addr: u32) -> Result<(u32, u32), Internal> {
    if tree.root == TREE_EMPTY {
        return Ok((0, 0));
    }
    let addr = core::hint::black_box(addr as u64);
    let root = NODES4.get(tree.root).ok_or(Internal)?;
    let idx = match tree.height {
        0 => tree.root,
        h => lookup::descend4(root, h, addr)?,
    };
    let first = idx.wrapping_mul(CELLS4);
    core::hint::black_box(touch(first, CELLS4));
    let leaf = NODES4.get(idx).ok_or(Internal)?;
    let c = lookup::leaf4_pos(leaf, addr);
    Ok((leaf.w[c], first + c as u32))
}

/// [`crate::lookup::tree6`]'s walk (from the arena's root), returning the value and its cell.
#[inline(never)]
pub fn walk6(tree: &Tree, addr: (u64, u64)) -> Result<(u32, u32), Internal> {
    if tree.root == TREE_EMPTY {
        return Ok((0, 0));
    }
    let addr = (core::hint::black_box(addr.0), core::hint::black_box(addr.1));
    let root = NODES6.get(tree.root).ok_or(Internal)?;
    let idx = match tree.height {
        0 => tree.root,
        h => lookup::descend6(root, h, addr)?,
    };
    let first = idx.wrapping_mul(CELLS6);
    core::hint::black_box(touch(first, CELLS6));
    let leaf = NODES6.get(idx).ok_or(Internal)?;
    let c = lookup::leaf6_pos(leaf, addr);
    Ok((
        lookup::leaf6_value(leaf, c),
        first + (c as u32 & (CELLS6 - 1)),
    ))
}
