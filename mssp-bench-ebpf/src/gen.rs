//! mssp-gen: the benchmarks' and rate tests' traffic generator. Run with BPF_PROG_TEST_RUN in
//! live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): for every frame it writes the next flow's
//! addresses into the template and returns XDP_TX, which sends the frame out of the test
//! run's ingress interface (one end of a veth pair; mssp filters the other).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use mssp_bench_ebpf::{Flow, Flow4, GenConfig, MAX_FLOWS};

#[map]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// index -> flow; read in order, so the table's own order is the traffic's distribution.
#[map]
static GEN_FLOWS: Array<Flow> = Array::with_max_entries(MAX_FLOWS, 0);

/// index -> IPv4 flow (the table used when the template is IPv4).
#[map]
static GEN_FLOWS4: Array<Flow4> = Array::with_max_entries(MAX_FLOWS, 0);

/// Per-CPU position in the flow table.
#[map]
static GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn write<const N: usize>(ctx: &XdpContext, off: u32, bytes: &[u8; 16]) -> Option<()> {
    let off = (off & 0x3ff) as usize;
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    let dst = (start + off) as *mut [u8; N];
    let mut v = [0u8; N];
    v.copy_from_slice(&bytes[..N]);
    unsafe { core::ptr::write_unaligned(dst, v) };
    Some(())
}

#[xdp]
pub fn mssp_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = GEN_CONFIG.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = GEN_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let n = cfg.n_flows as u64;
    if n == 0 {
        return xdp_action::XDP_TX;
    }
    let i = unsafe {
        if *seq == 0 {
            // CPUs start at different places of the table.
            *seq = bpf_get_smp_processor_id() as u64 * 7_919 + 1;
        }
        *seq += 1;
        *seq
    };
    let idx = (i % n) as u32;
    let ok = if cfg.v6 != 0 {
        let Some(flow) = GEN_FLOWS.get(idx) else {
            return xdp_action::XDP_ABORTED;
        };
        write::<16>(&ctx, cfg.src_off, &flow.src)
            .and_then(|_| write::<16>(&ctx, cfg.dst_off, &flow.dst))
    } else {
        let Some(flow) = GEN_FLOWS4.get(idx) else {
            return xdp_action::XDP_ABORTED;
        };
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..4].copy_from_slice(&flow[..4]);
        dst[..4].copy_from_slice(&flow[4..]);
        write::<4>(&ctx, cfg.src_off, &src).and_then(|_| write::<4>(&ctx, cfg.dst_off, &dst))
    };
    match ok {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_ABORTED,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
