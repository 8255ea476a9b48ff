//! What the traffic generator (`mssp-gen`) and the benchmarks' userspace agree on: a table of
//! flows the program writes into each frame it sends, one after the other. The programs
//! themselves are the binary targets (`gen.rs`, `lpm.rs`), built and embedded by `mssp-bench`.
#![no_std]

/// Flows in the table, at most.
pub const MAX_FLOWS: u32 = 1 << 21;

/// Where to write addresses in the template frame, and how many flows there are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    pub n_flows: u32,
    pub v6: u32,
    /// Byte offsets of the source and destination address in the frame.
    pub src_off: u32,
    pub dst_off: u32,
}

/// One (source, destination) pair; IPv4 uses the first word, in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// One IPv4 (source, destination) pair, addresses in network byte order: a quarter of
/// a [`Flow`], so an IPv4 table of a million flows stays in the cache.
pub type Flow4 = [u8; 8];

pub const CONFIG: &str = "GEN_CONFIG";
pub const FLOWS: &str = "GEN_FLOWS";
pub const FLOWS4: &str = "GEN_FLOWS4";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, `Copy`, no padding.
    unsafe impl aya::Pod for super::GenConfig {}
    unsafe impl aya::Pod for super::Flow {}
}
