//! Branch-free comparisons for the data path. BPF has no set-on-condition or conditional
//! move, so `a <= b` as a value becomes a branch that loads a constant, and the verifier then
//! tracks every combination of those constants across unrolled loops. That refused the
//! program at a million instructions, in the rule matchers and in the IPv6 header walk.
//! Callers pass values through `black_box` where LLVM could turn the arithmetic back into a
//! compare-and-branch.

/// 1 if `a >= b`, for values below 2^32.
#[inline(always)]
pub fn ge(a: u64, b: u64) -> u64 {
    b.wrapping_sub(a).wrapping_sub(1) >> 63
}

/// 1 if `a == b`, for values below 2^32.
#[inline(always)]
pub fn eq(a: u64, b: u64) -> u64 {
    (a ^ b).wrapping_sub(1) >> 63
}

/// `a` if `m` is 1, `b` if it is 0: masks, not a branch the verifier would follow twice.
#[inline(always)]
pub fn pick(m: u64, a: u64, b: u64) -> u64 {
    let mask = 0u64.wrapping_sub(core::hint::black_box(m));
    (a & mask) | (b & !mask)
}
