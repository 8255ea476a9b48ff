//! What the customer-interface XDP program and the filtering inspector agree on: which
//! packets are steered to AF_XDP, the per-flow verdict cache, and the kernel-side counters.
//!
//! On a customer-facing interface the customer is found by the packet's *source*. Only
//! packets that name a destination leave the kernel: DNS queries (UDP and TCP to port 53)
//! and TCP segments with payload to ports 80 and 443 whose flow has no cached verdict.

/// Receive queues per customer interface with a socket (one AF_XDP socket per queue).
pub const MAX_QUEUES: u32 = 64;
/// Customer interfaces the inspector serves.
pub const MAX_CUSTOMER_IFACES: u32 = 16;
/// Entries of the XSKMAP: interface base (`XSK_BASE`) + rx queue.
pub const XSK_ENTRIES: u32 = MAX_QUEUES * MAX_CUSTOMER_IFACES;
/// Flows whose verdict is cached (LRU: losing one costs one more inspection).
pub const MAX_FLOWS: u32 = 262_144;
/// XDP stops steering when the inspector's heartbeat is older than this (fail-open).
pub const HEARTBEAT_TIMEOUT_NS: u64 = 1_000_000_000;
/// How often the inspector beats (well inside the timeout).
pub const HEARTBEAT_EVERY_NS: u64 = 100_000_000;

pub const PORT_DNS: u16 = 53;
pub const PORT_HTTP: u16 = 80;
pub const PORT_HTTPS: u16 = 443;

/// A flow as the customer sent it (IPv4 addresses in the first word, host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub v6: u8,
    pub pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Values of the `FLOWS` verdict cache.
pub mod flow_verdict {
    /// The inspector allowed the flow: its later segments stay in the kernel.
    pub const ALLOW: u32 = 1;
    /// The inspector blocked the flow: XDP drops its later segments.
    pub const BLOCK: u32 = 2;
}

/// Indices of the per-CPU `FILTER_STATS` counters (packets) kept by the customer program.
pub mod filter_stat {
    /// Redirected to an AF_XDP socket.
    pub const STEERED: u32 = 0;
    /// A candidate passed because no socket was bound on its queue.
    pub const NO_SOCKET: u32 = 1;
    /// A candidate passed because the inspector's heartbeat was stale (fail-open).
    pub const FAIL_OPEN: u32 = 2;
    /// Passed in the kernel by a cached allow verdict.
    pub const CACHE_ALLOW: u32 = 3;
    /// Dropped in the kernel by a cached block verdict.
    pub const CACHE_BLOCK: u32 = 4;
    /// UDP/443 dropped for a customer that blocks QUIC.
    pub const QUIC_DROP: u32 = 5;
    /// Every packet the customer program saw.
    pub const SEEN: u32 = 6;
    pub const N: u32 = 8;
    pub const NAMES: [&str; 7] = [
        "steered",
        "no_socket",
        "fail_open",
        "cache_allow",
        "cache_block",
        "quic_drop",
        "seen",
    ];
}
