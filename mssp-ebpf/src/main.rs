//! mssp's XDP program: finds the customer a packet is for and applies that customer's policy,
//! in the order the design brief fixes (parse, infrastructure, customer, allowlist, global
//! list, customer list, rules, default). Every packet leaves through `finish`, which counts it.
#![no_std]
#![no_main]
// The bpf target has no atomic compare-and-swap in its spec, though the kernel has had
// BPF_CMPXCHG since 5.12 and LLVM emits it (cpu v3): the token buckets use the intrinsic.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod cells;
mod filter;
mod lookup;
mod maps;
mod observe;
mod rules;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext,
};
use lookup::Internal;
use mssp_common::{
    Reason, Verdict,
    abi::{
        ROOT_SLOT, Record, SourceAction, TRACE_MAGIC, Trace, counter_index, record_flags,
        trace_flags, value,
    },
};
use mssp_ebpf::parse::{self, Packet};

use crate::maps::{COUNTERS, ENTRY_HITS, SCRATCH};

/// Set to 1 at load time (`EbpfLoader::override_global`) by `mssp simulate` and the tests:
/// every decision is then prepended to the frame (see `trace`). The verifier prunes the dead
/// branch when 0.
#[unsafe(no_mangle)]
static TRACE: u32 = 0;

/// Customer slots the maps were created with (load time; `counter_index` needs it).
#[unsafe(no_mangle)]
static SLOTS: u32 = mssp_common::abi::MAX_SLOTS;

/// Set to 1 at load time for the benchmark floor (`parse_only`): parse, then drop and count,
/// with no lookups. Pruned by the verifier when 0.
#[unsafe(no_mangle)]
static PARSE_ONLY: u32 = 0;

/// The benchmark's breakdown (load time; 0 in production, pruned by the verifier): stop and
/// drop after the customer's record (1), after the root node of its source tree (2: its copy
/// in the record, `Record::src4_head`), after
/// the whole source lookup but without counting the entry's hit (3), or after the
/// destination tree, before the customer's record (4), so each step's cost is measured; or
/// the whole lookup with the hit counted in a cell keyed by the leaf's position (5, `cells.rs`).
/// See `mssp_core::loader::Breakdown`.
#[unsafe(no_mangle)]
static STOP_AFTER: u32 = 0;

/// Set to 0 at load time for the regression check's baseline: no meters, no samples (the
/// same program otherwise). Pruned by the verifier when 0.
#[unsafe(no_mangle)]
pub(crate) static OBSERVE: u32 = 1;

/// Entries per CPU block of the striped counter maps (load time; see maps.rs).
#[unsafe(no_mangle)]
static COUNTERS_STRIDE: u32 = mssp_common::abi::MAX_COUNTERS;
#[unsafe(no_mangle)]
static HITS_STRIDE: u32 = mssp_common::abi::MAX_ENTRY_IDS;
#[unsafe(no_mangle)]
pub(crate) static RULE_STATS_STRIDE: u32 = mssp_common::abi::MAX_RULES;
#[unsafe(no_mangle)]
pub(crate) static METERS_STRIDE: u32 = mssp_common::abi::METER_SLOTS;

/// This CPU's element `idx` of a striped map with `stride` entries per CPU.
#[inline(always)]
pub(crate) fn stripe<T>(
    map: &aya_ebpf::maps::Array<T>,
    stride: &'static u32,
    idx: u32,
) -> Option<*mut T> {
    let stride = unsafe { core::ptr::read_volatile(stride) };
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    map.get_ptr_mut(cpu.wrapping_mul(stride).wrapping_add(idx))
}

pub(crate) struct Decision {
    verdict: Verdict,
    reason: Reason,
    slot: u32,
    customer_id: u32,
    entry: u32,
    rule: u32,
    flags: u32,
}

impl Decision {
    const fn early(verdict: Verdict, reason: Reason) -> Decision {
        Decision {
            verdict,
            reason,
            slot: 0,
            customer_id: 0,
            entry: 0,
            rule: 0,
            flags: 0,
        }
    }
}

#[xdp]
pub fn mssp_xdp(ctx: XdpContext) -> u32 {
    let d = match try_mssp_xdp(&ctx) {
        Ok(d) => d,
        // Only an inconsistent map can get here; the packet passes (mssp must never be the
        // cause of an outage) and is counted as internal_error so it is not lost silently.
        Err(Internal) => Decision::early(Verdict::Pass, Reason::InternalError),
    };
    finish(&ctx, &d)
}

/// The program for customer-facing interfaces (`customer_interfaces`): content filtering.
#[xdp]
pub fn mssp_xdp_customer(ctx: XdpContext) -> u32 {
    filter::run(&ctx)
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

#[inline(always)]
fn count_hit(id: u32, bytes: u64) {
    if let Some(c) = stripe(&ENTRY_HITS, &HITS_STRIDE, id) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
fn finish(ctx: &XdpContext, d: &Decision) -> u32 {
    let bytes = frame_len(ctx);
    let slots = unsafe { core::ptr::read_volatile(&SLOTS) };

    let idx = counter_index(d.slot, d.verdict as u32, d.reason as u32, slots);
    if let Some(c) = stripe(&COUNTERS, &COUNTERS_STRIDE, idx) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if unsafe { core::ptr::read_volatile(&OBSERVE) } != 0 && observe::due() {
        observe::sample(ctx, d, bytes);
    }
    if unsafe { core::ptr::read_volatile(&TRACE) } != 0 {
        trace(ctx, d);
    }
    match d.verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

/// Trace mode only: prepends the decision to the frame, so BPF_PROG_TEST_RUN hands it back
/// in `data_out` — per run, with no shared state between concurrent callers. The verdict is
/// unchanged; a program with TRACE set is never attached to an interface.
#[inline(always)]
fn trace(ctx: &XdpContext, d: &Decision) {
    let room = size_of::<Trace>() as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -room) } != 0 {
        return;
    }
    let start = ctx.data();
    if start + size_of::<Trace>() > ctx.data_end() {
        return;
    }
    let t = start as *mut Trace;
    unsafe {
        core::ptr::write_unaligned(
            t,
            Trace {
                verdict: d.verdict as u32,
                reason: d.reason as u32,
                slot: d.slot,
                customer_id: d.customer_id,
                entry: d.entry,
                rule: d.rule,
                flags: d.flags,
                seq: TRACE_MAGIC,
            },
        );
    }
}

#[inline(always)]
fn try_mssp_xdp(ctx: &XdpContext) -> Result<Decision, Internal> {
    let p = SCRATCH.get_ptr_mut(0).ok_or(Internal)?;
    // SAFETY: a per-CPU value; XDP runs with preemption off, so nothing else uses it now.
    let p = unsafe { &mut *p };
    match parse::parse(ctx, p) {
        Ok(()) => {}
        Err(reason) => {
            let verdict = if reason == Reason::NonIp {
                Verdict::Pass
            } else {
                Verdict::Drop
            };
            return Ok(Decision::early(verdict, reason));
        }
    }
    if unsafe { core::ptr::read_volatile(&PARSE_ONLY) } != 0 {
        return Ok(Decision::early(Verdict::Drop, Reason::Default));
    }
    evaluate(p, frame_len(ctx))
}

/// Steps 2-8 of the evaluation order.
#[inline(always)]
fn evaluate(p: &Packet, bytes: u64) -> Result<Decision, Internal> {
    let mut d = Decision::early(Verdict::Pass, Reason::Default);
    let Some(root) = lookup::record(ROOT_SLOT)? else {
        // No policy published yet: nothing to enforce.
        return Ok(d);
    };

    // Step 3 first, for counting only: an infrastructure packet to a customer is counted
    // under that customer. The verdict order is unchanged.
    let slot = if p.v6 {
        lookup::tree6(&root.dst6, p.dst6)?
    } else {
        lookup::tree4(&root.dst4, p.dst4)?
    };
    let stop = unsafe { core::ptr::read_volatile(&STOP_AFTER) };
    if stop == 4 {
        d.verdict = Verdict::Drop;
        d.entry = slot;
        return Ok(d);
    }
    let customer = if slot != 0 {
        lookup::record(slot)?
    } else {
        None
    };
    if let Some(c) = customer {
        d.slot = slot;
        d.customer_id = c.customer_id;
        d.flags |= trace_flags::CUSTOMER;
        if c.flags & record_flags::METER != 0 && unsafe { core::ptr::read_volatile(&OBSERVE) } != 0
        {
            observe::meter(p, c.customer_id, bytes);
        }
    }

    // Step 2: infrastructure, source or destination. Nothing overrides it.
    let infra = if p.v6 {
        lookup::tree6(&root.infra6, p.src6)? != 0 || lookup::tree6(&root.infra6, p.dst6)? != 0
    } else {
        lookup::tree4(&root.infra4, p.src4)? != 0 || lookup::tree4(&root.infra4, p.dst4)? != 0
    };
    if infra {
        d.reason = Reason::Infrastructure;
        return Ok(d);
    }

    if stop != 0 {
        return breakdown(stop, customer, p, d);
    }

    // Step 4: the customer's own source list; allow beats the global list.
    let cust_v = match customer {
        Some(c) => lookup::resolve(if p.v6 {
            lookup::src6(c, p.src6)?
        } else {
            lookup::src4(c, p.src4)?
        })?,
        None => 0,
    };
    let cust_action = value::action(cust_v);
    if cust_action == SourceAction::Allow as u32 {
        count_hit(value::id(cust_v), bytes);
        d.reason = Reason::Allowlisted;
        d.entry = value::id(cust_v);
        return Ok(d);
    }

    // Step 5: the global list.
    let glob_v = lookup::resolve(if p.v6 {
        lookup::src6(root, p.src6)?
    } else {
        lookup::src4(root, p.src4)?
    })?;
    let glob_action = value::action(glob_v);
    if glob_action == SourceAction::Drop as u32 {
        count_hit(value::id(glob_v), bytes);
        d.verdict = Verdict::Drop;
        d.reason = Reason::GlobalBlock;
        d.entry = value::id(glob_v);
        return Ok(d);
    }
    if glob_action == SourceAction::Monitor as u32 {
        count_hit(value::id(glob_v), bytes);
        d.flags |= trace_flags::GLOBAL_MONITOR;
    }

    // Step 6: the customer's drop and monitor entries.
    if cust_action == SourceAction::Drop as u32 {
        count_hit(value::id(cust_v), bytes);
        d.verdict = Verdict::Drop;
        d.reason = Reason::CustomerBlock;
        d.entry = value::id(cust_v);
        return Ok(d);
    }
    if cust_action == SourceAction::Monitor as u32 {
        count_hit(value::id(cust_v), bytes);
        d.flags |= trace_flags::CUSTOMER_MONITOR;
    }

    // Step 7: the customer's rules; then the clean-pipe limit on what would pass.
    if let Some(c) = customer {
        let rc = rules::fill(p, bytes, c.rules.start).ok_or(Internal)?;
        rules::run(c);
        match rc.outcome {
            rules::outcome::DROP => {
                d.verdict = Verdict::Drop;
                d.reason = Reason::Rule;
                d.rule = rc.rule_id;
                return Ok(d);
            }
            rules::outcome::LIMITED => {
                d.verdict = Verdict::Drop;
                d.reason = Reason::RateLimited;
                d.rule = rc.rule_id;
                return Ok(d);
            }
            rules::outcome::PASS => {
                d.reason = Reason::Rule;
                d.rule = rc.rule_id;
            }
            _ => {}
        }
        if !rules::customer_limit_ok(c, rc) {
            d.verdict = Verdict::Drop;
            d.reason = Reason::CustomerLimit;
            return Ok(d);
        }
    }
    // Step 8: default (or the passing rule's verdict).
    Ok(d)
}

/// The benchmark's breakdown: the lookup up to `STOP_AFTER`'s step, then drop.
#[inline(never)]
fn breakdown(
    stop: u32,
    customer: Option<&Record>,
    p: &Packet,
    mut d: Decision,
) -> Result<Decision, Internal> {
    d.verdict = Verdict::Drop;
    let Some(c) = customer else {
        return Ok(d);
    };
    let tree = if p.v6 { &c.src6 } else { &c.src4 };
    // The record itself is read already (its id and flags); step 1 reads its tree too.
    let root = unsafe { core::ptr::read_volatile(&tree.root) };
    if stop == 1 {
        d.entry = root;
        return Ok(d);
    }
    if stop == 2 {
        d.entry = lookup::touch_head(p.v6, c);
        return Ok(d);
    }
    if stop == 5 {
        let (v, cell) = if p.v6 {
            cells::walk6(&c.src6, p.src6)?
        } else {
            cells::walk4(&c.src4, p.src4)?
        };
        let v = lookup::resolve(v)?;
        if v != 0 {
            // The frame's length is not at hand (BPF passes five arguments); the same
            // read-modify-write of the cell's packets and bytes.
            cells::count(cell, 64);
        }
        d.entry = value::id(v);
        return Ok(d);
    }
    let v = lookup::resolve(if p.v6 {
        lookup::src6(c, p.src6)?
    } else {
        lookup::src4(c, p.src4)?
    })?;
    d.entry = value::id(v);
    Ok(d)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
