//! The benchmarks' "straightforward design" baseline: the same parser as mssp, then the
//! customer by a longest-prefix match of the destination, then one kernel LPM trie holding
//! every customer's source prefixes keyed by (customer, source). Drops on a hit.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use mssp_ebpf::parse::{self, Packet};

/// destination (IPv4 as ::ffff:a.b.c.d) -> customer.
#[map]
static LPM_DST: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(65_536, 0);

/// (customer, source) -> 1 (drop).
#[map]
static LPM_SRC: LpmTrie<[u8; 20], u32> = LpmTrie::with_max_entries(1_100_000, 0);

#[map]
static SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// 0: passed, 1: dropped.
#[map]
static LPM_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

fn mapped(v6: bool, a4: u32, a6: (u64, u64)) -> [u8; 16] {
    let mut b = [0u8; 16];
    if v6 {
        b[..8].copy_from_slice(&a6.0.to_be_bytes());
        b[8..].copy_from_slice(&a6.1.to_be_bytes());
    } else {
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&a4.to_be_bytes());
    }
    b
}

fn count(i: u32) {
    if let Some(c) = LPM_COUNT.get_ptr_mut(i) {
        unsafe { *c += 1 };
    }
}

#[xdp]
pub fn mssp_lpm(ctx: XdpContext) -> u32 {
    let Some(p) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let p = unsafe { &mut *p };
    if parse::parse(&ctx, p).is_err() {
        return xdp_action::XDP_PASS;
    }
    let dst = mapped(p.v6, p.dst4, p.dst6);
    let Some(customer) = LPM_DST.get(Key::new(128, dst)) else {
        count(0);
        return xdp_action::XDP_PASS;
    };
    let mut key = [0u8; 20];
    key[..4].copy_from_slice(&customer.to_be_bytes());
    key[4..].copy_from_slice(&mapped(p.v6, p.src4, p.src6));
    if LPM_SRC.get(Key::new(160, key)).is_some() {
        count(1);
        return xdp_action::XDP_DROP;
    }
    count(0);
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
