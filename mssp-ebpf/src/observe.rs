//! What the agent's attack detection and the NOC's live views read: meters of the traffic
//! offered to each destination of a customer with detection on, and one sampled packet in N
//! with its decision. Neither changes a verdict.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use mssp_common::{
    abi::{
        DEFAULT_SAMPLE_EVERY, METER_WAYS, MeterKey, MeterSlot, SAMPLE_BYTES, Sample, config_index,
        meter_class, meter_set,
    },
    proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};
use mssp_ebpf::parse::{Packet, frag};

use crate::{
    Decision,
    maps::{CONFIG, METERS, SAMPLE_COUNTDOWN, SAMPLES},
};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[inline(always)]
fn add(m: *mut MeterSlot, class: usize) {
    // SAFETY: this CPU's block of a striped array; XDP runs with preemption off.
    unsafe { (*m).packets[class] = (*m).packets[class].wrapping_add(1) };
}

#[inline(always)]
fn same(m: *const MeterSlot, k: &MeterKey) -> bool {
    // SAFETY: a valid map value.
    let x = unsafe { &(*m).key };
    x.customer == k.customer
        && x.addr[0] == k.addr[0]
        && x.addr[1] == k.addr[1]
        && x.addr[2] == k.addr[2]
        && x.addr[3] == k.addr[3]
}

/// Counts the packet on its destination's meter: this CPU's set for the key, either way
/// that holds it, else the way used least recently is taken over (so the busiest
/// destination of a set keeps its meter). A function of its own (a BPF-to-BPF call): its
/// branches end at its return instead of multiplying the states the verifier walks through
/// the rules after it.
#[inline(never)]
pub fn meter(p: &Packet, customer: u32, bytes: u64) {
    let addr = if p.v6 {
        [
            (p.dst6.0 >> 32) as u32,
            p.dst6.0 as u32,
            (p.dst6.1 >> 32) as u32,
            p.dst6.1 as u32,
        ]
    } else {
        [0, 0, MeterKey::V4_MAPPED, p.dst4]
    };
    let key = MeterKey { customer, addr };
    let base = meter_set(&key) * METER_WAYS;
    let (Some(w0), Some(w1)) = (
        crate::stripe(&METERS, &crate::METERS_STRIDE, base),
        crate::stripe(&METERS, &crate::METERS_STRIDE, base + 1),
    ) else {
        return;
    };
    // SAFETY (all blocks below): valid map values of this CPU, preemption off.
    let (m, way) = if same(w0, &key) {
        (w0, 0)
    } else if same(w1, &key) {
        (w1, 1)
    } else {
        let (victim, way) = if unsafe { (*w0).mru } == 0 {
            (w1, 1)
        } else {
            (w0, 0)
        };
        unsafe {
            (*victim).key = key;
            (*victim).packets = [0; meter_class::N];
            (*victim).bytes = 0;
        }
        (victim, way)
    };
    unsafe {
        if (*w0).mru != way {
            (*w0).mru = way;
        }
        (*m).bytes += bytes;
    }
    add(m, meter_class::ALL);
    if p.frag != frag::NONE {
        add(m, meter_class::FRAG);
    }
    if p.proto == IPPROTO_UDP {
        add(m, meter_class::UDP);
    } else if p.proto == IPPROTO_TCP {
        if p.has_l4 && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            add(m, meter_class::TCP_SYN);
        }
    } else if p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6 {
        add(m, meter_class::ICMP);
    }
}

/// Whether this packet is sampled: a per-CPU countdown, reset to a random gap averaging
/// `CONFIG[SAMPLE_EVERY]` when it runs out (random, so periodic traffic cannot hide between
/// samples). A decrement per packet; the rest only when a sample is taken.
#[inline(always)]
pub fn due() -> bool {
    let Some(left) = SAMPLE_COUNTDOWN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU value; XDP runs with preemption off on this CPU.
    unsafe {
        if *left > 1 {
            *left -= 1;
            return false;
        }
        *left = next_gap();
    }
    true
}

#[inline(never)]
fn next_gap() -> u64 {
    let every = match CONFIG.get(config_index::SAMPLE_EVERY) {
        Some(v) if *v != 0 => *v,
        _ => DEFAULT_SAMPLE_EVERY,
    };
    // Uniform on [1, 2 * every - 1]: mean `every`.
    let r = unsafe { bpf_get_prandom_u32() } as u64;
    1 + r % (2 * every - 1).max(1)
}

/// The sampled packet to the ring buffer with its decision and first bytes. A full ring
/// drops the sample, never the packet. Not inlined, for the same reason as [`meter`].
#[inline(never)]
pub fn sample(ctx: &XdpContext, d: &Decision, bytes: u64) {
    let every = match CONFIG.get(config_index::SAMPLE_EVERY) {
        Some(v) if *v != 0 => *v,
        _ => DEFAULT_SAMPLE_EVERY,
    };
    let Some(mut entry) = SAMPLES.reserve::<Sample>(0) else {
        return;
    };
    let s = entry.as_mut_ptr();
    let cap = if bytes > SAMPLE_BYTES as u64 {
        SAMPLE_BYTES as u32
    } else {
        bytes as u32
    };
    // SAFETY: `s` points at a reserved, exclusively owned record of `size_of::<Sample>()`.
    unsafe {
        (*s).verdict = d.verdict as u32;
        (*s).reason = d.reason as u32;
        (*s).slot = d.slot;
        (*s).customer_id = d.customer_id;
        (*s).entry = d.entry;
        (*s).rule = d.rule;
        (*s).flags = d.flags;
        (*s).frame_len = bytes as u32;
        (*s).every = every as u32;
        (*s).ts_boot_ns = bpf_ktime_get_boot_ns();
        // 1..=128 by construction, so the verifier sees a non-empty, bounded copy (a frame
        // is never empty; if it were, the copy of 128 bytes fails and nothing is claimed).
        let n = (core::hint::black_box(cap).wrapping_sub(1) & (SAMPLE_BYTES as u32 - 1)) + 1;
        let copied = bpf_xdp_load_bytes(ctx.ctx, 0, (*s).data.as_mut_ptr().cast(), n) == 0;
        (*s).cap_len = if copied { n } else { 0 };
    }
    entry.submit(0);
}
