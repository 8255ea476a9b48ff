//! Every map of the program, one line each: key -> value, and why its size.
//! Capacities come from `mssp_common::abi`; the agent can override them at load time.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, XskMap},
};
use mssp_common::abi::{
    Bucket, ChainLink, Counter, MAX_BUCKETS, MAX_CHAIN, MAX_COUNTERS, MAX_ENTRY_IDS, MAX_NODES4,
    MAX_NODES6, MAX_RECORDS, MAX_RULE_CIDRS, MAX_RULES, MAX_SLOTS, MAX_SOURCE_BUCKETS, METER_SLOTS,
    MeterSlot, Node4, Node6, Record, Rule, RuleCidr, RuleCounter, SAMPLE_RING_BYTES,
    SourceBucketKey, config_index,
};
use mssp_common::filter::{FlowKey, MAX_CUSTOMER_IFACES, MAX_FLOWS, XSK_ENTRIES, filter_stat};

/// slot -> index into RECORDS of the slot's live record (0: none). Memory-mapped so the agent
/// publishes a record with one aligned 32-bit store. One per customer slot plus the root.
#[map]
pub static CUR: Array<u32> = Array::with_max_entries(MAX_SLOTS, BPF_F_MMAPABLE);

/// record index -> compiled policy of a customer (or the root). Two per slot: live and next.
#[map]
pub static RECORDS: Array<Record> = Array::with_max_entries(MAX_RECORDS, 0);

/// node index -> IPv4 search-tree node. Arena shared by every IPv4 prefix list.
#[map]
pub static NODES4: Array<Node4> = Array::with_max_entries(MAX_NODES4, 0);

/// node index -> IPv6 search-tree node. Arena shared by every IPv6 prefix list.
#[map]
pub static NODES6: Array<Node6> = Array::with_max_entries(MAX_NODES6, 0);

/// link index -> expiry chain link, for intervals whose most specific entry expires.
#[map]
pub static CHAIN: Array<ChainLink> = Array::with_max_entries(MAX_CHAIN, 0);

// Counters are "striped": a plain array holding one block per possible CPU, the packet's CPU
// picking its block (`stripe`). That keeps them per CPU (no atomics, no shared cache lines)
// while a lookup is one memory access: a per-CPU array first loads a per-element pointer from
// a table as large as the map, a second cache (and TLB) miss per packet (measured: ~350 ns of
// ~1.3 us at a million entries). The agent sizes them stride x CPUs at load time.

/// cpu * stride + counter_index(slot, verdict, reason) -> packets and bytes.
#[map]
pub static COUNTERS: Array<Counter> = Array::with_max_entries(MAX_COUNTERS, 0);

/// cpu * stride + entry id -> hits (packets and bytes), for drop, allow and monitor entries.
#[map]
pub static ENTRY_HITS: Array<Counter> = Array::with_max_entries(MAX_ENTRY_IDS, 0);

/// cpu * CELLS_STRIDE + leaf index * cells per leaf + value position -> hits. The benchmark's
/// hit-cell probe only (`cells.rs`); one entry otherwise.
#[map]
pub static HIT_CELLS: Array<Counter> = Array::with_max_entries(1, 0);

/// 0 -> the packet being evaluated on this CPU (see `parse::Packet` for why not the stack).
#[map]
pub static SCRATCH: PerCpuArray<mssp_ebpf::parse::Packet> = PerCpuArray::with_max_entries(1, 0);

/// 0 -> the rule loop's context on this CPU (`rules::RuleCtx`). In a map rather than on the
/// stack so the verifier does not track what the `bpf_loop` callback writes into it (the
/// outcome, the clock) as a distinct state per iteration and per call path: on the stack it
/// ran the program past the verifier's million instructions on kernel 6.18.44.
#[map]
pub static RULE_CTX: PerCpuArray<mssp_ebpf::rule_ctx::RuleCtx> = PerCpuArray::with_max_entries(1, 0);

/// index -> rule. Arena of every customer's rule list (a record names its range).
#[map]
pub static RULES: Array<Rule> = Array::with_max_entries(MAX_RULES, 0);

/// index -> CIDR of a rule's sources/destinations. Arena, like RULES.
#[map]
pub static RULE_CIDRS: Array<RuleCidr> = Array::with_max_entries(MAX_RULE_CIDRS, 0);

/// cpu * stride + rule stat index -> hits and rate-limited drops (striped like COUNTERS).
#[map]
pub static RULE_STATS: Array<RuleCounter> = Array::with_max_entries(MAX_RULES, 0);

/// bucket index -> token bucket of a rate-limit rule or a customer limit. Shared by all CPUs
/// (compare-and-swap), so a limit holds however traffic spreads over CPUs.
#[map]
pub static BUCKETS: Array<Bucket> = Array::with_max_entries(MAX_BUCKETS, 0);

/// (bucket, source) -> per-source token bucket. LRU: eviction only resets a bucket to full;
/// blocks never live here.
#[map]
pub static SRC_BUCKETS: LruHashMap<SourceBucketKey, Bucket> =
    LruHashMap::with_max_entries(MAX_SOURCE_BUCKETS, 0);

/// cpu * stride + slot -> a meter of the per-CPU meter cache (see `abi::MeterSlot`): offered
/// packets and bytes per traffic class of one (customer, destination), for customers whose
/// record has `METER` (detection on). Memory-mapped: the agent reads it without a syscall
/// per meter.
#[map]
pub static METERS: Array<MeterSlot> = Array::with_max_entries(METER_SLOTS, BPF_F_MMAPABLE);

/// 0 -> packets until this CPU's next sample (see `observe::due`).
#[map]
pub static SAMPLE_COUNTDOWN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sampled packets (one in `CONFIG[SAMPLE_EVERY]`) with their decision, to the agent.
#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLE_RING_BYTES, 0);

/// config index -> value the agent sets while the program runs (see `config_index`).
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(config_index::N, 0);

// Content filtering, on customer-facing interfaces only (see `filter.rs`).

/// XSK_BASE[ifindex] + rx queue -> the inspector's AF_XDP socket bound to that queue of that
/// interface. The kernel removes a socket when it closes, so a dead inspector's queues
/// pass at once.
#[map]
pub static XSKS: XskMap = XskMap::with_max_entries(XSK_ENTRIES, 0);

/// customer interface's ifindex -> its first index in XSKS (set by the inspector).
#[map]
pub static XSK_BASE: HashMap<u32, u32> = HashMap::with_max_entries(MAX_CUSTOMER_IFACES, 0);

/// customer's flow -> the inspector's verdict (`filter::flow_verdict`), so long flows stay
/// in the kernel after the first decision. LRU: an evicted flow is inspected once more.
#[map]
pub static FLOWS: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// stat index -> packets (`filter::filter_stat`), per CPU.
#[map]
pub static FILTER_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(filter_stat::N, 0);
