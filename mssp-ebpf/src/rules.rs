//! Step 7: a customer's rules, in order, first terminal match wins; rate limits as shared
//! token buckets (GCRA over compare-and-swap); the customer's clean-pipe limit.
//!
//! The rule loop runs under `bpf_loop`, so the verifier checks the per-rule body until its
//! states converge instead of once per rule; its context is in a map (`RULE_CTX`), which
//! keeps that to a few passes.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_boot_ns, bpf_loop},
};
use mssp_common::{
    abi::{
        Bucket, MAX_RULES_PER_CUSTOMER, RULE_MAX_CIDRS, RULE_MAX_PORT_RANGES, RULE_MAX_VLANS,
        RateParams, Record, Rule, SourceBucketKey, T16_BYTE_AT_1BPS, rule_action,
        rule_fields, rule_flags,
    },
    proto::{IPPROTO_TCP, IPPROTO_UDP},
};

use mssp_ebpf::{
    arith::{eq, ge},
    parse::Packet,
};

use crate::maps::{BUCKETS, RULE_CIDRS, RULE_CTX, RULE_STATS, RULES, SRC_BUCKETS};

pub use mssp_ebpf::rule_ctx::{RuleCtx, outcome};

/// This CPU's rule context, filled in for `p`.
#[inline(always)]
pub fn fill(p: &Packet, bytes: u64, rules_start: u32) -> Option<&'static mut RuleCtx> {
    let c = RULE_CTX.get_ptr_mut(0)?;
    let c = unsafe { &mut *c };
    *c = RuleCtx::new(p, bytes, rules_start);
    Some(c)
}

#[inline(always)]
fn bit(map: &[u32; 8], v: u32) -> bool {
    let v = v & 0xff;
    (map[(v >> 5) as usize & 7] >> (v & 31)) & 1 != 0
}

#[inline(always)]
fn in_ranges(ranges: &[u32; RULE_MAX_PORT_RANGES], n: u32, port: u32) -> bool {
    let port = core::hint::black_box(port as u64);
    let n = core::hint::black_box(n as u64);
    let mut hit = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        let lo = (*r & 0xffff) as u64;
        let hi = (*r >> 16) as u64;
        hit |= ge(n, i as u64 + 1) & ge(port, lo) & ge(hi, port);
    }
    hit != 0
}

#[inline(always)]
fn in_vlans(vlans: &[u32; RULE_MAX_VLANS], n: u32, vlan: u32) -> bool {
    let vlan = core::hint::black_box(vlan as u64);
    let n = core::hint::black_box(n as u64);
    let mut hit = 0u64;
    for (i, v) in vlans.iter().enumerate() {
        hit |= ge(n, i as u64 + 1) & eq(*v as u64, vlan);
    }
    hit != 0
}

/// Whether the address matches any CIDR of `RULE_CIDRS[start .. start + len]`.
#[inline(always)]
fn in_cidrs(start: u32, len: u32, v6: u32, addr: &[u32; 4]) -> bool {
    for i in 0..RULE_MAX_CIDRS {
        if i >= len {
            break;
        }
        let Some(c) = RULE_CIDRS.get(start.wrapping_add(i)) else {
            return false;
        };
        if c.v6 == v6
            && addr[0] & c.mask[0] == c.addr[0]
            && addr[1] & c.mask[1] == c.addr[1]
            && addr[2] & c.mask[2] == c.addr[2]
            && addr[3] & c.mask[3] == c.addr[3]
        {
            return true;
        }
    }
    false
}

#[inline(always)]
fn matches(r: &Rule, c: &RuleCtx) -> bool {
    let f = r.fields;
    if f & rule_fields::NEEDS_L4 != 0 && c.has_l4 == 0 {
        // A later fragment (or a protocol without these headers) never matches port, flag
        // or ICMP fields.
        return false;
    }
    if f & rule_fields::PROTOCOL != 0 && !bit(&r.protocol, c.proto) {
        return false;
    }
    if f & (rule_fields::SRC_PORTS | rule_fields::DST_PORTS) != 0
        && c.proto != IPPROTO_TCP as u32
        && c.proto != IPPROTO_UDP as u32
    {
        return false;
    }
    if f & rule_fields::SRC_PORTS != 0 && !in_ranges(&r.sport, r.n_sport, c.sport) {
        return false;
    }
    if f & rule_fields::DST_PORTS != 0 && !in_ranges(&r.dport, r.n_dport, c.dport) {
        return false;
    }
    if f & rule_fields::TCP_FLAGS != 0
        && (c.is_tcp == 0 || c.tcp_flags & r.tcp_set != r.tcp_set || c.tcp_flags & r.tcp_unset != 0)
    {
        return false;
    }
    if f & rule_fields::ICMP_TYPE != 0 && (c.is_icmp == 0 || !bit(&r.icmp_type, c.icmp_type)) {
        return false;
    }
    if f & rule_fields::ICMP_CODE != 0 && (c.is_icmp == 0 || !bit(&r.icmp_code, c.icmp_code)) {
        return false;
    }
    if f & rule_fields::LENGTH != 0 && (c.ip_len < r.len_min || c.ip_len > r.len_max) {
        return false;
    }
    if f & rule_fields::TTL != 0 && (c.ttl < r.ttl_min || c.ttl > r.ttl_max) {
        return false;
    }
    if f & rule_fields::DSCP != 0 && (r.dscp[(c.dscp >> 5) as usize & 1] >> (c.dscp & 31)) & 1 == 0
    {
        return false;
    }
    if f & rule_fields::FRAGMENT != 0 && r.fragment & c.frag_bit == 0 {
        return false;
    }
    if f & rule_fields::VLAN != 0 && !in_vlans(&r.vlan, r.n_vlan, c.vlan) {
        return false;
    }
    if f & rule_fields::SOURCES != 0 && !in_cidrs(r.src.start, r.src.len, c.v6, &c.src) {
        return false;
    }
    if f & rule_fields::DESTINATIONS != 0 && !in_cidrs(r.dst.start, r.dst.len, c.v6, &c.dst) {
        return false;
    }
    true
}

/// One GCRA step on a shared theoretical arrival time: conforms (and advances it) when the
/// packet's cost fits in the burst tolerance. Lock-free: compare-and-swap, a few retries.
#[inline(always)]
fn gcra(tat: *mut u64, cost: u64, tau: u64, now: u64) -> bool {
    for _ in 0..8 {
        let old = unsafe { core::ptr::read_volatile(tat) };
        let base = if old > now { old } else { now };
        let new = base + cost;
        if new > now + tau {
            return false;
        }
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                tat, old, new,
            )
        };
        if swapped {
            return true;
        }
    }
    // Persistent contention: let the packet through rather than spin.
    true
}

/// Whether a packet of `bytes` conforms to `params` on `bucket` at `now` (t16).
#[inline(always)]
pub fn conforms(bucket: *mut Bucket, params: &RateParams, bytes: u64, now: u64) -> bool {
    if params.pkt_cost != 0
        && !gcra(
            unsafe { &raw mut (*bucket).pkt_tat },
            params.pkt_cost,
            params.pkt_tau,
            now,
        )
    {
        return false;
    }
    if params.bps != 0 {
        let cost = bytes * T16_BYTE_AT_1BPS / params.bps;
        if !gcra(
            unsafe { &raw mut (*bucket).byte_tat },
            cost,
            params.byte_tau,
            now,
        ) {
            return false;
        }
    }
    true
}

#[inline(always)]
fn rule_bucket(r: &Rule, c: &RuleCtx) -> Option<*mut Bucket> {
    if r.flags & rule_flags::PER_SOURCE == 0 {
        return BUCKETS.get_ptr_mut(r.stat);
    }
    let key = SourceBucketKey {
        bucket: r.stat,
        v6: c.v6,
        addr: c.src,
    };
    if let Some(b) = SRC_BUCKETS.get_ptr_mut(&key) {
        return Some(b);
    }
    let _ = SRC_BUCKETS.insert(&key, &Bucket::default(), BPF_NOEXIST as u64);
    SRC_BUCKETS.get_ptr_mut(&key)
}

fn count(stat: u32, bytes: u64, limited: bool) {
    if let Some(s) = crate::stripe(&RULE_STATS, &crate::RULE_STATS_STRIDE, stat) {
        unsafe {
            (*s).packets += 1;
            (*s).bytes += bytes;
            if limited {
                (*s).limited_packets += 1;
                (*s).limited_bytes += bytes;
            }
        }
    }
}

/// The `bpf_loop` body: rule `index` of the customer. Returns 1 to stop at a terminal match.
unsafe extern "C" fn rule_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(c) = RULE_CTX.get_ptr_mut(0) else {
        return 1;
    };
    let c = unsafe { &mut *c };
    let Some(r) = RULES.get(c.rules_start.wrapping_add(index as u32)) else {
        return 1;
    };
    // Expired: the rule no longer exists, even if no agent has republished yet. (The clock
    // is read per expiring rule rather than cached in the context: a cached value would be
    // one more state for the verifier to track through every match below.)
    if r.expires_boot_ns != 0 && unsafe { bpf_ktime_get_boot_ns() } >= r.expires_boot_ns {
        return 0;
    }
    if !matches(r, c) {
        return 0;
    }
    match r.action {
        rule_action::DROP => {
            count(r.stat, c.bytes, false);
            c.outcome = outcome::DROP;
        }
        rule_action::PASS => {
            count(r.stat, c.bytes, false);
            c.outcome = outcome::PASS;
        }
        rule_action::RATE_LIMIT => {
            let now = c.now();
            let ok = match rule_bucket(r, c) {
                Some(b) => conforms(b, &r.rate, c.bytes, now),
                None => true,
            };
            count(r.stat, c.bytes, !ok);
            c.outcome = if ok { outcome::PASS } else { outcome::LIMITED };
        }
        _ => {
            // Monitor: counted, evaluation goes on.
            count(r.stat, c.bytes, false);
            return 0;
        }
    }
    c.rule_id = r.id;
    1
}

/// Runs the customer's rules over the packet.
#[inline(always)]
pub fn run(rec: &Record) {
    let n = if rec.rules.len > MAX_RULES_PER_CUSTOMER {
        MAX_RULES_PER_CUSTOMER
    } else {
        rec.rules.len
    };
    if n == 0 {
        return;
    }
    unsafe {
        bpf_loop(
            n,
            rule_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
}

/// The customer's clean-pipe limit on a packet that would pass.
#[inline(always)]
pub fn customer_limit_ok(rec: &Record, c: &mut RuleCtx) -> bool {
    if rec.limit_bucket == 0 {
        return true;
    }
    let Some(b) = BUCKETS.get_ptr_mut(rec.limit_bucket) else {
        return true;
    };
    let now = c.now();
    conforms(b, &rec.limit, c.bytes, now)
}
