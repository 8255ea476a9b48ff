//! Map layouts shared by the XDP program and the agent.
//!
//! # How the policy sits in the maps
//!
//! Every prefix list (infrastructure, customer prefixes, global and per-customer sources) is
//! compiled by userspace into a *static search tree* over address intervals: the prefixes are
//! cut into disjoint intervals, each interval carries the value of its most specific covering
//! prefix (leaf pushing), and a lookup is "find the interval containing the address". That is
//! exactly longest-prefix match, at the cost of two or three cache lines per lookup instead
//! of the twenty-odd nodes a kernel LPM trie visits at a million prefixes.
//!
//! Trees live in shared arenas ([`Node4`], [`Node6`]); a tree is immutable once published.
//! A customer's [`Record`] names its trees; the record is published by storing its index in
//! `CUR[slot]` with one aligned 32-bit store, so a packet sees a customer's old or new policy,
//! never a mix. Slot 0's record is the *root*: infrastructure, customer prefixes and the global
//! source list, switched the same way.
//!
//! All types are `#[repr(C)]`, `Copy`, without implicit padding.

use crate::reason::{NREASONS, NVERDICTS};

/// Bumped whenever a layout in this file changes incompatibly. Pinned maps made by another
/// ABI version are never edited: the agent refuses and says how to upgrade.
pub const ABI_VERSION: u32 = 4;

/// Customer slots, including slot 0 (the root record / the "no customer" counters).
pub const MAX_SLOTS: u32 = 16_384;
/// Records: every slot can hold a live and a pending record at once.
pub const MAX_RECORDS: u32 = 2 * MAX_SLOTS + 64;
/// IPv4 tree nodes (128 bytes each): about 2M intervals of live policy plus room to build the next.
pub const MAX_NODES4: u32 = 524_288;
/// IPv6 tree nodes (256 bytes each, up to 13 intervals per leaf).
pub const MAX_NODES6: u32 = 262_144;
/// Expiry chains (see [`ChainLink`]).
pub const MAX_CHAIN: u32 = 65_536;
/// Source entry ids (hit counters).
pub const MAX_ENTRY_IDS: u32 = 2_097_152;
/// `(slot, verdict, reason)` counters.
pub const MAX_COUNTERS: u32 = MAX_SLOTS * NVERDICTS * NREASONS;

/// An empty tree: every lookup yields value 0.
pub const TREE_EMPTY: u32 = u32::MAX;
/// Deepest tree the data path descends (internal levels). 32^5 * 16 IPv4 intervals and
/// 16^5 * 13 IPv6 intervals are far beyond the node arenas, so this bound is never the limit.
pub const TREE4_MAX_HEIGHT: u32 = 5;
pub const TREE6_MAX_HEIGHT: u32 = 5;

/// Index into `CUR` of the root record.
pub const ROOT_SLOT: u32 = 0;

/// Counter index of `(slot, verdict, reason)` in maps made for `slots` slots: one row of
/// `slots` counters per (verdict, reason), so the map's size follows the configured slots
/// and a (verdict, reason) across all customers is one contiguous read.
#[inline(always)]
pub const fn counter_index(slot: u32, verdict: u32, reason: u32, slots: u32) -> u32 {
    (verdict * NREASONS + reason) * slots + slot
}

/// One search tree: where its root node is and how many internal levels sit above the leaves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tree {
    /// Node index of the root, or [`TREE_EMPTY`].
    pub root: u32,
    /// Internal levels above the leaf level (0: the root is a leaf).
    pub height: u32,
}
const _: () = assert!(size_of::<Tree>() == 8);

impl Tree {
    pub const EMPTY: Tree = Tree {
        root: TREE_EMPTY,
        height: 0,
    };
}

/// IPv4 tree node, 128 bytes (two cache lines).
///
/// Keys are interval starts minus one, so that "interval start <= addr" becomes
/// "key < addr" and padding with `u32::MAX` can never compare below any address
/// (an interval may legitimately start at 255.255.255.255).
///
/// * internal: `w[0]` = index of the first child; `w[1..32]` = 31 keys; the child taken is
///   `first_child + #(keys < addr)` (fan-out 32).
/// * leaf: `w[0..16]` = 16 values; `w[16..31]` = 15 keys; `w[31]` = `u32::MAX`; the value
///   taken is `w[#(keys < addr)]` (16 intervals per leaf).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node4 {
    pub w: [u32; 32],
}
const _: () = assert!(size_of::<Node4>() == 128);

pub const NODE4_FANOUT: usize = 32;
pub const NODE4_KEYS: usize = 31;
pub const LEAF4_VALUES: usize = 16;
pub const LEAF4_KEYS: usize = 15;

/// IPv6 tree node, 256 bytes (twice an IPv4 node: a `u128` key is four times a `u32`, and
/// at 128 bytes a customer's few hundred intervals took two internal levels, one more
/// dependent miss per packet). Keys are `u128` (interval start minus one) stored as
/// `(high, low)` pairs of `u64`.
///
/// * internal: `w[0]` = first child; `w[1]` unused; `w[2..32]` = 15 keys (fan-out 16).
/// * leaf: `w[0..24]` = 12 keys; `w[24..31]` = 13 values packed two per word, value `i` at
///   bits `32 * (i % 2)` of `w[24 + i / 2]` (13 intervals per leaf); `w[31]` unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node6 {
    pub w: [u64; 32],
}
const _: () = assert!(size_of::<Node6>() == 256);

pub const NODE6_FANOUT: usize = 16;
pub const NODE6_KEYS: usize = 15;
pub const LEAF6_VALUES: usize = 13;
pub const LEAF6_KEYS: usize = 12;
/// The word of a leaf where its packed values start.
pub const LEAF6_VALUE_WORD: usize = 24;

impl Node4 {
    pub const PAD: Node4 = Node4 { w: [u32::MAX; 32] };
}

impl Node6 {
    pub const PAD: Node6 = Node6 { w: [u64::MAX; 32] };

    #[inline(always)]
    pub const fn leaf_value(&self, i: usize) -> u32 {
        (self.w[LEAF6_VALUE_WORD + i / 2] >> (32 * (i % 2))) as u32
    }

    #[inline(always)]
    pub const fn set_leaf_value(&mut self, i: usize, v: u32) {
        let shift = 32 * (i % 2);
        let word = &mut self.w[LEAF6_VALUE_WORD + i / 2];
        *word = (*word & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
    }
}

/// Source-list values (the leaf values of `src4`/`src6` trees).
///
/// `0` is "no entry". Otherwise the top two bits are the [`SourceAction`]; if [`VALUE_CHAIN`]
/// is set the low bits index an expiry chain in `CHAIN`, else they are the entry id that
/// indexes the hit counters.
pub mod value {
    pub const ACTION_SHIFT: u32 = 30;
    pub const VALUE_CHAIN: u32 = 1 << 29;
    pub const ID_MASK: u32 = (1 << 29) - 1;

    #[inline(always)]
    pub const fn entry(action: u32, id: u32) -> u32 {
        (action << ACTION_SHIFT) | (id & ID_MASK)
    }

    #[inline(always)]
    pub const fn chain(action: u32, index: u32) -> u32 {
        (action << ACTION_SHIFT) | VALUE_CHAIN | (index & ID_MASK)
    }

    #[inline(always)]
    pub const fn action(v: u32) -> u32 {
        v >> ACTION_SHIFT
    }

    #[inline(always)]
    pub const fn is_chain(v: u32) -> bool {
        v & VALUE_CHAIN != 0
    }

    #[inline(always)]
    pub const fn id(v: u32) -> u32 {
        v & ID_MASK
    }
}

/// What a source entry does. The numbers are the top bits of a source value; the names are
/// the policy document's and the API's (`"drop"`, `"allow"`, `"monitor"`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum SourceAction {
    Drop = 1,
    Allow = 2,
    Monitor = 3,
}

impl SourceAction {
    pub const fn name(self) -> &'static str {
        match self {
            SourceAction::Drop => "drop",
            SourceAction::Allow => "allow",
            SourceAction::Monitor => "monitor",
        }
    }

    pub const fn from_u32(v: u32) -> Option<SourceAction> {
        match v {
            1 => Some(SourceAction::Drop),
            2 => Some(SourceAction::Allow),
            3 => Some(SourceAction::Monitor),
            _ => None,
        }
    }
}

/// Read from a string, so that any other JSON type is a type error at its field path (a
/// derived enum would make serde_json report `"action": 1` as a syntax error, pathless).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SourceAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SourceAction;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a source action: \"drop\", \"allow\" or \"monitor\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SourceAction, E> {
                match v {
                    "drop" => Ok(SourceAction::Drop),
                    "allow" => Ok(SourceAction::Allow),
                    "monitor" => Ok(SourceAction::Monitor),
                    other => Err(E::unknown_variant(other, &["drop", "allow", "monitor"])),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// One link of an expiry chain. An interval whose most specific entry expires points at a
/// chain: that entry, then the next less specific covering entry, and so on until an entry
/// that never expires (or "none", `value == 0`). The data path takes the first link that has
/// not expired, so an entry stops being enforced at its expiry time even if no agent runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainLink {
    /// Expiry in `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`); `u64::MAX` = never.
    pub expires_boot_ns: u64,
    /// A direct source value (never a chain), or 0.
    pub value: u32,
    /// Index of the next link plus one; 0 ends the chain.
    pub next: u32,
}
const _: () = assert!(size_of::<ChainLink>() == 16);

/// Longest expiry chain the data path follows (nesting depth of expiring entries over one
/// address); the compiler refuses deeper nesting.
pub const CHAIN_MAX_LINKS: u32 = 8;

/// Record flags.
pub mod record_flags {
    /// The record is in use (an all-zero record is never published).
    pub const LIVE: u32 = 1;
    /// Meter the customer's traffic per destination address (`METERS`): attack detection
    /// is on for the customer.
    pub const METER: u32 = 2;
    /// Content filtering: the customer (or, on the root, the global list) blocks names, so
    /// its DNS queries and first TLS/HTTP segments on customer interfaces are inspected.
    pub const FILTER: u32 = 4;
    /// The customer blocks QUIC (UDP/443) on customer interfaces, so browsers fall back
    /// to TCP, where the name is visible.
    pub const QUIC_BLOCK: u32 = 8;
}

/// A customer's compiled policy (or, in slot 0, the root: infrastructure, customer prefixes
/// and the global source list). 576 bytes; what every packet reads sits in the first 64, and
/// the root nodes of its source trees ride along at the end ([`Record::src4_head`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// [`ABI_VERSION`] of the agent that wrote it.
    pub abi: u32,
    pub flags: u32,
    pub customer_id: u32,
    pub slot: u32,
    /// Source list (customer) or global source list (root).
    pub src4: Tree,
    pub src6: Tree,
    /// Root only: infrastructure prefixes (value 1 inside).
    pub infra4: Tree,
    pub infra6: Tree,
    /// Root only: customer prefixes (value = slot).
    pub dst4: Tree,
    pub dst6: Tree,
    /// The customer's rules in `RULES` (first terminal match wins).
    pub rules: Span,
    /// The rules' source/destination CIDR lists in `RULE_CIDRS`.
    pub rule_cidrs: Span,
    /// Digest of what the record was compiled from, so a restarted agent can tell whether
    /// what is live already equals what it wants.
    pub digest: u64,
    /// The arena ranges this record owns (its trees sit inside them), so a restarted agent
    /// can rebuild its allocators from the live records alone.
    pub n4: Span,
    pub n6: Span,
    pub chain: Span,
    /// Clean-pipe limit: bucket index in `BUCKETS` (0: no limit) and its parameters.
    pub limit_bucket: u32,
    pub limit_reserved: u32,
    pub limit: RateParams,
    pub reserved: [u32; 10],
    /// Copies of the source trees' root nodes (`NODES4[src4.root]`, `NODES6[src6.root]`;
    /// padding when the tree is empty). A packet's source lookup starts here: their address
    /// is known as soon as the record's is, so the CPU fetches the record and the root
    /// together instead of one after the other (issue 15's "customer head"). The arena keeps
    /// its own copy, which the benchmark's probes and userspace walk.
    pub src4_head: Node4,
    pub src6_head: Node6,
}
const _: () = assert!(size_of::<Record>() == 576);

/// Token-bucket parameters (GCRA). Time runs in sixteenths of a nanosecond ("t16"), so rates
/// up to 10^9 packets per second keep a sub-nanosecond resolution; a packet conforms when the
/// bucket's theoretical arrival time, advanced by the packet's cost, stays within `now + tau`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateParams {
    /// t16 per packet (16e9 / pps); 0: no packet limit.
    pub pkt_cost: u64,
    /// Burst tolerance for packets: burst * pkt_cost.
    pub pkt_tau: u64,
    /// Bits per second; 0: no byte limit. A packet of n bytes costs n * 128e9 / bps t16.
    pub bps: u64,
    /// Burst tolerance for bytes: burst_bytes * 128e9 / bps.
    pub byte_tau: u64,
}
const _: () = assert!(size_of::<RateParams>() == 32);

/// t16 units per second.
pub const T16_PER_SEC: u64 = 16_000_000_000;
/// t16 per byte at 1 bit/s (8 bits per byte).
pub const T16_BYTE_AT_1BPS: u64 = 8 * T16_PER_SEC;

/// Live token-bucket state (the theoretical arrival times), shared by all CPUs and updated
/// with compare-and-swap. Not part of the immutable policy: it survives policy updates.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub pkt_tat: u64,
    pub byte_tat: u64,
}
const _: () = assert!(size_of::<Bucket>() == 16);

/// Key of a per-source bucket (LRU map): eviction resets a bucket to full, which can let a
/// burst through early but never unblocks a block (blocks never live in LRU maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceBucketKey {
    pub bucket: u32,
    pub v6: u32,
    pub addr: [u32; 4],
}
const _: () = assert!(size_of::<SourceBucketKey>() == 24);

/// Rule actions.
pub mod rule_action {
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const MONITOR: u32 = 3;
    pub const RATE_LIMIT: u32 = 4;
}

/// Which match fields a rule has (bits of [`Rule::fields`]).
pub mod rule_fields {
    pub const PROTOCOL: u32 = 1 << 0;
    pub const SOURCES: u32 = 1 << 1;
    pub const DESTINATIONS: u32 = 1 << 2;
    pub const SRC_PORTS: u32 = 1 << 3;
    pub const DST_PORTS: u32 = 1 << 4;
    pub const TCP_FLAGS: u32 = 1 << 5;
    pub const ICMP_TYPE: u32 = 1 << 6;
    pub const ICMP_CODE: u32 = 1 << 7;
    pub const LENGTH: u32 = 1 << 8;
    pub const TTL: u32 = 1 << 9;
    pub const DSCP: u32 = 1 << 10;
    pub const FRAGMENT: u32 = 1 << 11;
    pub const VLAN: u32 = 1 << 12;
    /// Fields a later fragment cannot match (it has no L4 header).
    pub const NEEDS_L4: u32 = SRC_PORTS | DST_PORTS | TCP_FLAGS | ICMP_TYPE | ICMP_CODE;
}

/// Fragment states as bits of [`Rule::fragment`].
pub mod frag_bits {
    pub const NONE: u32 = 1;
    pub const FIRST: u32 = 2;
    pub const LATER: u32 = 4;
}

/// Bits of [`Rule::flags`].
pub mod rule_flags {
    /// Each source address gets its own bucket (LRU map).
    pub const PER_SOURCE: u32 = 1;
}

pub const RULE_MAX_PORT_RANGES: usize = 16;
pub const RULE_MAX_VLANS: usize = 8;
/// Source or destination CIDRs per rule.
pub const RULE_MAX_CIDRS: u32 = 16;
/// Rules per customer (both layers together).
pub const MAX_RULES_PER_CUSTOMER: u32 = 64;
pub const MAX_RULES: u32 = 65_536;
pub const MAX_RULE_CIDRS: u32 = 65_536;
/// Buckets: one per rate-limiting rule and per customer limit.
pub const MAX_BUCKETS: u32 = 65_536;
pub const MAX_SOURCE_BUCKETS: u32 = 262_144;

/// One rule, 512 bytes. All match fields present in `fields` must match (AND); a list inside
/// a field matches if any element does (OR).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub action: u32,
    pub fields: u32,
    pub flags: u32,
    /// Index into `RULE_STATS` (and `BUCKETS` for rate limits); stable while the rule is.
    pub stat: u32,
    pub n_sport: u32,
    pub n_dport: u32,
    pub n_vlan: u32,
    /// Bitmap of IP protocol numbers.
    pub protocol: [u32; 8],
    /// Port ranges: low 16 bits the first port, high 16 bits the last (inclusive).
    pub sport: [u32; RULE_MAX_PORT_RANGES],
    pub dport: [u32; RULE_MAX_PORT_RANGES],
    pub tcp_set: u32,
    pub tcp_unset: u32,
    /// Bitmaps of ICMP types and codes.
    pub icmp_type: [u32; 8],
    pub icmp_code: [u32; 8],
    pub len_min: u32,
    pub len_max: u32,
    pub ttl_min: u32,
    pub ttl_max: u32,
    /// Bitmap of DSCP values (64 bits).
    pub dscp: [u32; 2],
    /// Bits of [`frag_bits`].
    pub fragment: u32,
    pub pad0: u32,
    pub vlan: [u32; RULE_MAX_VLANS],
    /// Source and destination CIDRs: ranges of `RULE_CIDRS`.
    pub src: Span,
    pub dst: Span,
    pub rate: RateParams,
    /// `CLOCK_BOOTTIME` nanoseconds from which the rule is skipped (0: never), so a rule of
    /// the auto or fleet layer stops at its expiry even if no agent runs.
    pub expires_boot_ns: u64,
    pub reserved: [u32; 32],
}
const _: () = assert!(size_of::<Rule>() == 512);

impl Rule {
    pub const EMPTY: Rule = Rule {
        id: 0,
        action: 0,
        fields: 0,
        flags: 0,
        stat: 0,
        n_sport: 0,
        n_dport: 0,
        n_vlan: 0,
        protocol: [0; 8],
        sport: [0; RULE_MAX_PORT_RANGES],
        dport: [0; RULE_MAX_PORT_RANGES],
        tcp_set: 0,
        tcp_unset: 0,
        icmp_type: [0; 8],
        icmp_code: [0; 8],
        len_min: 0,
        len_max: 0,
        ttl_min: 0,
        ttl_max: 0,
        dscp: [0; 2],
        fragment: 0,
        pad0: 0,
        vlan: [0; RULE_MAX_VLANS],
        src: Span { start: 0, len: 0 },
        dst: Span { start: 0, len: 0 },
        rate: RateParams {
            pkt_cost: 0,
            pkt_tau: 0,
            bps: 0,
            byte_tau: 0,
        },
        expires_boot_ns: 0,
        reserved: [0; 32],
    };
}

/// A CIDR of a rule's `sources` or `destinations`, as address and mask words (network byte
/// order semantics, host-order numbers; IPv4 in `addr[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCidr {
    pub v6: u32,
    pub len: u32,
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}
const _: () = assert!(size_of::<RuleCidr>() == 40);

/// Hits of a rule (per CPU in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounter {
    pub packets: u64,
    pub bytes: u64,
    /// Packets dropped by the rule's rate limit.
    pub limited_packets: u64,
    pub limited_bytes: u64,
}
const _: () = assert!(size_of::<RuleCounter>() == 32);

/// A range `[start, start + len)` of an arena map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}
const _: () = assert!(size_of::<Span>() == 8);

impl Record {
    pub const EMPTY: Record = Record {
        abi: ABI_VERSION,
        flags: 0,
        customer_id: 0,
        slot: 0,
        src4: Tree::EMPTY,
        src6: Tree::EMPTY,
        infra4: Tree::EMPTY,
        infra6: Tree::EMPTY,
        dst4: Tree::EMPTY,
        dst6: Tree::EMPTY,
        rules: Span { start: 0, len: 0 },
        rule_cidrs: Span { start: 0, len: 0 },
        digest: 0,
        n4: Span { start: 0, len: 0 },
        n6: Span { start: 0, len: 0 },
        chain: Span { start: 0, len: 0 },
        limit_bucket: 0,
        limit_reserved: 0,
        limit: RateParams {
            pkt_cost: 0,
            pkt_tau: 0,
            bps: 0,
            byte_tau: 0,
        },
        reserved: [0; 10],
        src4_head: Node4::PAD,
        src6_head: Node6::PAD,
    };
}

/// A packets-and-bytes counter (per CPU in the maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// What the program decided for a frame. Only a program loaded with `TRACE = 1` (`mssp
/// simulate`, tests) writes it, prepended to the frame it returns from BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub verdict: u32,
    pub reason: u32,
    pub slot: u32,
    pub customer_id: u32,
    /// Entry id of the source entry that decided (drop/allow), or 0.
    pub entry: u32,
    /// Id of the rule that decided, or 0.
    pub rule: u32,
    /// Bit 0: a customer matched. Bit 1: a global monitor entry hit. Bit 2: a customer monitor
    /// entry hit.
    pub flags: u32,
    /// [`TRACE_MAGIC`], so a reader can tell a trace from frame bytes.
    pub seq: u32,
}
const _: () = assert!(size_of::<Trace>() == 32);

pub const TRACE_MAGIC: u32 = 0x6d73_7370;

/// Meter classes: the index into [`Meter::packets`] and [`Meter::bytes`].
pub mod meter_class {
    pub const ALL: usize = 0;
    pub const UDP: usize = 1;
    /// TCP with SYN set and ACK clear.
    pub const TCP_SYN: usize = 2;
    /// ICMP or ICMPv6.
    pub const ICMP: usize = 3;
    /// Any fragment (first or later).
    pub const FRAG: usize = 4;
    pub const N: usize = 5;
    pub const NAMES: [&str; N] = ["all", "udp", "tcp_syn", "icmp", "frag"];
}

/// Meters: a 2-way set-associative cache per CPU (one block of [`METER_SLOTS`] per CPU of
/// a memory-mapped array, like the striped counters), indexed by a hash of the customer and
/// the destination. A miss takes the way with fewer packets, so a flooded destination keeps
/// its meter; losing one only loses a reading, never unblocks anything.
pub const METER_SETS: u32 = 4096;
pub const METER_WAYS: u32 = 2;
pub const METER_SLOTS: u32 = METER_SETS * METER_WAYS;

/// Key of a meter: the customer and the destination address, IPv4 as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`); an all-zero key is an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MeterKey {
    pub customer: u32,
    pub addr: [u32; 4],
}
const _: () = assert!(size_of::<MeterKey>() == 20);

impl MeterKey {
    pub const V4_MAPPED: u32 = 0xffff;

    /// The IPv4 address, if the key is one.
    pub const fn v4(&self) -> Option<u32> {
        if self.addr[0] == 0 && self.addr[1] == 0 && self.addr[2] == Self::V4_MAPPED {
            Some(self.addr[3])
        } else {
            None
        }
    }
}

/// Packets and bytes offered to a destination (before the verdict), per [`meter_class`],
/// as userspace accumulates them (bytes only for [`meter_class::ALL`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    pub packets: [u64; meter_class::N],
    pub bytes: [u64; meter_class::N],
}
const _: () = assert!(size_of::<Meter>() == 80);

/// One slot of the meter cache: one cache line. Packet counts are 32-bit and wrap; the agent
/// reads every slot four times a second and accumulates the differences.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterSlot {
    pub key: MeterKey,
    /// Way 0 only: which way of the set was used last (the other is the one replaced).
    pub mru: u32,
    pub packets: [u32; meter_class::N],
    pub pad: u32,
    /// Bytes of all classes together.
    pub bytes: u64,
    pub pad2: u64,
}
const _: () = assert!(size_of::<MeterSlot>() == 64);

/// The set of a key: a multiplicative hash of the customer and the address words.
#[inline(always)]
pub const fn meter_set(k: &MeterKey) -> u32 {
    let mut h = (k.customer as u64) ^ ((k.addr[0] as u64) << 32) ^ k.addr[1] as u64;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ ((k.addr[2] as u64) << 32) ^ k.addr[3] as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    ((h >> 40) as u32) & (METER_SETS - 1)
}

/// Bytes of a sampled frame carried to the agent.
pub const SAMPLE_BYTES: usize = 128;
/// Size of the sample ring buffer.
pub const SAMPLE_RING_BYTES: u32 = 1 << 20;
/// One in `DEFAULT_SAMPLE_EVERY` packets is sampled until the agent sets the rate.
pub const DEFAULT_SAMPLE_EVERY: u64 = 256;

/// A sampled packet: the decision, as [`Trace`] has it, and the frame's first bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub verdict: u32,
    pub reason: u32,
    pub slot: u32,
    pub customer_id: u32,
    pub entry: u32,
    pub rule: u32,
    pub flags: u32,
    /// Bytes of the whole frame, and of it in `data`.
    pub frame_len: u32,
    pub cap_len: u32,
    /// The sampling rate in force when it was taken (one in `every`).
    pub every: u32,
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub ts_boot_ns: u64,
    pub data: [u8; SAMPLE_BYTES],
}
const _: () = assert!(size_of::<Sample>() == 48 + SAMPLE_BYTES);

/// Indices of the `CONFIG` array (values the agent sets while the program runs).
pub mod config_index {
    /// Sample one packet in N (a power of two; 0: [`super::DEFAULT_SAMPLE_EVERY`]).
    pub const SAMPLE_EVERY: u32 = 0;
    /// CLOCK_MONOTONIC ns of the filtering inspector's last heartbeat: XDP steers to it
    /// only while this is under [`crate::filter::HEARTBEAT_TIMEOUT_NS`] old (fail-open).
    pub const FILTER_HEARTBEAT: u32 = 1;
    pub const N: u32 = 16;
}

pub mod trace_flags {
    pub const CUSTOMER: u32 = 1;
    pub const GLOBAL_MONITOR: u32 = 2;
    pub const CUSTOMER_MONITOR: u32 = 4;
}

/// Names of the maps, as the agent pins and finds them.
pub mod map_names {
    pub const CUR: &str = "CUR";
    pub const RECORDS: &str = "RECORDS";
    pub const NODES4: &str = "NODES4";
    pub const NODES6: &str = "NODES6";
    pub const CHAIN: &str = "CHAIN";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ENTRY_HITS: &str = "ENTRY_HITS";
    pub const RULES: &str = "RULES";
    pub const RULE_CIDRS: &str = "RULE_CIDRS";
    pub const RULE_STATS: &str = "RULE_STATS";
    pub const BUCKETS: &str = "BUCKETS";
    pub const SOURCE_BUCKETS: &str = "SRC_BUCKETS";
    pub const METERS: &str = "METERS";
    pub const SAMPLES: &str = "SAMPLES";
    pub const CONFIG: &str = "CONFIG";
    pub const XSKS: &str = "XSKS";
    pub const XSK_BASE: &str = "XSK_BASE";
    pub const FLOWS: &str = "FLOWS";
    pub const FILTER_STATS: &str = "FILTER_STATS";
    pub const ALL: [&str; 19] = [
        CUR,
        RECORDS,
        NODES4,
        NODES6,
        CHAIN,
        COUNTERS,
        ENTRY_HITS,
        RULES,
        RULE_CIDRS,
        RULE_STATS,
        BUCKETS,
        SOURCE_BUCKETS,
        METERS,
        SAMPLES,
        CONFIG,
        XSKS,
        XSK_BASE,
        FLOWS,
        FILTER_STATS,
    ];
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, and have no padding (asserted above).
    unsafe impl aya::Pod for Tree {}
    unsafe impl aya::Pod for Span {}
    unsafe impl aya::Pod for Node4 {}
    unsafe impl aya::Pod for Node6 {}
    unsafe impl aya::Pod for ChainLink {}
    unsafe impl aya::Pod for Record {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for Trace {}
    unsafe impl aya::Pod for Rule {}
    unsafe impl aya::Pod for RuleCidr {}
    unsafe impl aya::Pod for RuleCounter {}
    unsafe impl aya::Pod for RateParams {}
    unsafe impl aya::Pod for Bucket {}
    unsafe impl aya::Pod for SourceBucketKey {}
    unsafe impl aya::Pod for MeterKey {}
    unsafe impl aya::Pod for Meter {}
    unsafe impl aya::Pod for MeterSlot {}
    unsafe impl aya::Pod for crate::filter::FlowKey {}
}
