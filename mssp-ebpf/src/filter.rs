//! The customer-interface program: content filtering's kernel half. The customer is the
//! packet's *source* (longest-prefix match over the customers' prefixes, the same tree the
//! upstream program matches destinations in). Only packets that name a destination are
//! steered to the inspector's AF_XDP socket; everything else passes here, at once.
//!
//! Fail-open at every step: no policy, no customer, no socket on the queue, or a heartbeat
//! older than `HEARTBEAT_TIMEOUT_NS` — the packet passes.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use mssp_common::{
    abi::{ROOT_SLOT, config_index, record_flags},
    filter::{
        FlowKey, HEARTBEAT_TIMEOUT_NS, MAX_QUEUES, PORT_DNS, PORT_HTTP, PORT_HTTPS, filter_stat,
        flow_verdict,
    },
    proto::{IPPROTO_TCP, IPPROTO_UDP},
};
use mssp_ebpf::parse::{self, Packet};

use crate::{
    lookup::{self, Internal},
    maps::{CONFIG, FILTER_STATS, FLOWS, SCRATCH, XSK_BASE, XSKS},
};

const TCP_SYN: u8 = 0x02;

#[inline(always)]
fn count(stat: u32) {
    if let Some(c) = FILTER_STATS.get_ptr_mut(stat) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    count(filter_stat::SEEN);
    match decide(ctx) {
        Ok(action) => action,
        Err(Internal) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn flow_key(p: &Packet) -> FlowKey {
    let (src, dst) = if p.v6 {
        (
            [
                (p.src6.0 >> 32) as u32,
                p.src6.0 as u32,
                (p.src6.1 >> 32) as u32,
                p.src6.1 as u32,
            ],
            [
                (p.dst6.0 >> 32) as u32,
                p.dst6.0 as u32,
                (p.dst6.1 >> 32) as u32,
                p.dst6.1 as u32,
            ],
        )
    } else {
        ([p.src4, 0, 0, 0], [p.dst4, 0, 0, 0])
    };
    FlowKey {
        src,
        dst,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        v6: p.v6 as u8,
        pad: [0; 2],
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> Result<u32, Internal> {
    const PASS: u32 = xdp_action::XDP_PASS;
    let p = SCRATCH.get_ptr_mut(0).ok_or(Internal)?;
    // SAFETY: a per-CPU value; XDP runs with preemption off.
    let p = unsafe { &mut *p };
    // Whatever does not parse is not ours to judge on the way out: it passes.
    if parse::parse(ctx, p).is_err() || !p.has_l4 {
        return Ok(PASS);
    }
    let tcp = p.proto == IPPROTO_TCP;
    let udp = p.proto == IPPROTO_UDP;
    let candidate = (udp && (p.dport == PORT_DNS || p.dport == PORT_HTTPS))
        || (tcp && (p.dport == PORT_DNS || p.dport == PORT_HTTP || p.dport == PORT_HTTPS));
    if !candidate {
        return Ok(PASS);
    }
    let Some(root) = lookup::record(ROOT_SLOT)? else {
        return Ok(PASS);
    };
    // The router's own infrastructure always passes.
    let infra = if p.v6 {
        lookup::tree6(&root.infra6, p.src6)? != 0 || lookup::tree6(&root.infra6, p.dst6)? != 0
    } else {
        lookup::tree4(&root.infra4, p.src4)? != 0 || lookup::tree4(&root.infra4, p.dst4)? != 0
    };
    if infra {
        return Ok(PASS);
    }
    let slot = if p.v6 {
        lookup::tree6(&root.dst6, p.src6)?
    } else {
        lookup::tree4(&root.dst4, p.src4)?
    };
    let mut flags = root.flags & record_flags::FILTER;
    if slot != 0
        && let Some(c) = lookup::record(slot)?
    {
        flags |= c.flags;
    }
    if udp && p.dport == PORT_HTTPS {
        if flags & record_flags::QUIC_BLOCK != 0 {
            count(filter_stat::QUIC_DROP);
            return Ok(xdp_action::XDP_DROP);
        }
        return Ok(PASS);
    }
    if flags & record_flags::FILTER == 0 {
        return Ok(PASS);
    }
    if tcp {
        let key = flow_key(p);
        if p.tcp_flags & TCP_SYN != 0 {
            // A new connection on this 5-tuple: whatever was decided before is void.
            let _ = FLOWS.remove(&key);
            return Ok(PASS);
        }
        if let Some(v) = FLOWS.get_ptr(&key) {
            let v = unsafe { *v };
            if v == flow_verdict::BLOCK {
                count(filter_stat::CACHE_BLOCK);
                return Ok(xdp_action::XDP_DROP);
            }
            count(filter_stat::CACHE_ALLOW);
            return Ok(PASS);
        }
    }
    // Acks, FINs, empty datagrams: nothing to read.
    if p.payload == 0 {
        return Ok(PASS);
    }
    let beat = CONFIG
        .get(config_index::FILTER_HEARTBEAT)
        .map_or(0, |v| unsafe { core::ptr::read_volatile(v) });
    let now = unsafe { bpf_ktime_get_ns() };
    if beat == 0 || (now.wrapping_sub(beat) as i64) > HEARTBEAT_TIMEOUT_NS as i64 {
        count(filter_stat::FAIL_OPEN);
        return Ok(PASS);
    }
    let queue = ctx.rx_queue_index();
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(base) = (unsafe { XSK_BASE.get(&ifindex) }) else {
        count(filter_stat::NO_SOCKET);
        return Ok(PASS);
    };
    if queue >= MAX_QUEUES {
        count(filter_stat::NO_SOCKET);
        return Ok(PASS);
    }
    match XSKS.redirect(*base + queue, xdp_action::XDP_PASS as u64) {
        Ok(action) => {
            count(filter_stat::STEERED);
            Ok(action)
        }
        Err(_) => {
            count(filter_stat::NO_SOCKET);
            Ok(PASS)
        }
    }
}
