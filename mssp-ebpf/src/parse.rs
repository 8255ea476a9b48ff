//! The packet parser: tiny bounded functions, each advancing a cursor over the frame.
//! Every read goes through `ptr_at`. Offsets come from header sizes, never magic numbers.

use aya_ebpf::programs::XdpContext;
use mssp_common::{
    Reason,
    proto::{
        ETH_HLEN, ETH_MIN_FRAME, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ICMP_HLEN,
        IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV6_EXT_MAX, TCP_MIN_HLEN, UDP_HLEN,
        VLAN_MAX_DEPTH,
    },
};

use crate::arith::{eq, pick};

/// Offsets past this cannot be inside an XDP frame; clamping keeps the verifier's range of
/// the cursor bounded, which packet-pointer arithmetic requires.
const MAX_OFF: usize = 0x3fff;

/// A parse that ends the evaluation early with this reason.
pub type ParseResult<T> = Result<T, Reason>;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub csum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub vtcfl: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The first 8 bytes every walked extension header has (fragment header: all of it).
#[repr(C)]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub len: u8,
    pub frag: [u8; 2],
    pub rest: [u8; 4],
}

/// Fragment position of the packet.
pub mod frag {
    pub const NONE: u8 = 0;
    /// First fragment: offset 0, more fragments follow. Has L4 fields.
    pub const FIRST: u8 = 1;
    /// Offset > 0: no L4 fields.
    pub const LATER: u8 = 2;
}

/// What the rest of the program needs from a parsed packet. Addresses are numeric (host
/// order): IPv4 in `src4`/`dst4`, IPv6 as (high, low) halves.
///
/// It lives in a per-CPU scratch map, not on the stack: every parse path ends by writing it,
/// and the evaluation reads it back as plain values, so the verifier checks the evaluation
/// once instead of once per parse outcome (frame sizes also stay under BPF's 512 bytes).
#[repr(C)]
pub struct Packet {
    pub v6: bool,
    pub src4: u32,
    pub dst4: u32,
    pub src6: (u64, u64),
    pub dst6: (u64, u64),
    pub proto: u8,
    pub frag: u8,
    /// The L4 fields below are valid (TCP, UDP, ICMP/ICMPv6, not a later fragment).
    pub has_l4: bool,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// IP total length (IPv6: payload length + 40).
    pub ip_len: u32,
    pub ttl: u8,
    pub dscp: u8,
    /// Outer VLAN id, or u16::MAX when untagged.
    pub vlan: u16,
    /// TCP or UDP payload bytes in the datagram (0 otherwise).
    pub payload: u16,
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> ParseResult<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if off > MAX_OFF || start + off + size_of::<T>() > end {
        return Err(Reason::Malformed);
    }
    Ok((start + off) as *const T)
}

/// [`ptr_at`], also bounded by the end of the IP datagram (`limit`, as its header claims):
/// nothing past the datagram is read as a header, padding included.
#[inline(always)]
fn ptr_in<T>(ctx: &XdpContext, off: usize, limit: usize) -> ParseResult<*const T> {
    if off + size_of::<T>() > limit {
        return Err(Reason::Malformed);
    }
    ptr_at(ctx, off)
}

/// Where the IP datagram ends, checked against the frame: a datagram longer than the frame
/// (cut short) or a frame longer than its datagram beyond Ethernet's minimum-size padding
/// (bytes a length rule would not see) is malformed. `l3` is the offset of the IP header.
#[inline(always)]
fn datagram_end(ctx: &XdpContext, l3: usize, claimed: usize) -> ParseResult<usize> {
    let frame = ctx.data_end() - ctx.data();
    let carried = frame.saturating_sub(l3);
    if claimed > carried {
        return Err(Reason::Malformed);
    }
    // Padding only brings a frame up to 60 bytes (64 with one tag, 68 with two).
    if claimed < carried && frame > ETH_MIN_FRAME + (l3 - ETH_HLEN) {
        return Err(Reason::Malformed);
    }
    Ok(l3 + claimed)
}

/// 1 if `nh` is an IPv6 extension header the parser walks
/// ([`mssp_common::proto::is_ipv6_ext`]), as arithmetic.
#[inline(always)]
const fn ext_bit(nh: u64) -> u64 {
    const MASK: u64 = (1 << IPPROTO_HOPOPTS)
        | (1 << IPPROTO_ROUTING)
        | (1 << IPPROTO_FRAGMENT)
        | (1 << IPPROTO_DSTOPTS)
        | (1 << IPPROTO_AH);
    let below_64 = (nh.wrapping_sub(64) >> 63) & 1;
    (MASK >> (nh & 63)) & 1 & below_64
}

// The same set as the reference's, for every next-header value.
const _: () = {
    let mut nh = 0u64;
    while nh < 256 {
        assert!(mssp_common::proto::is_ipv6_ext(nh as u8) == (ext_bit(nh) == 1));
        nh += 1;
    }
};

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn addr6(b: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&b[..8]);
    lo.copy_from_slice(&b[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

/// Ethernet and up to `VLAN_MAX_DEPTH` tags: (ethertype, offset of the L3 header, outer vlan).
#[inline(always)]
fn parse_eth(ctx: &XdpContext) -> ParseResult<(u16, usize, u16)> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut proto = be16(unsafe { (*eth).proto });
    let mut off = size_of::<EthHdr>();
    let mut vlan = u16::MAX;
    for depth in 0..VLAN_MAX_DEPTH {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let tag: *const VlanHdr = ptr_at(ctx, off)?;
        if depth == 0 {
            vlan = be16(unsafe { (*tag).tci }) & 0x0fff;
        }
        proto = be16(unsafe { (*tag).proto });
        off += size_of::<VlanHdr>();
    }
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        return Err(Reason::UnsupportedEncap);
    }
    Ok((proto, off, vlan))
}

/// IPv4: returns the offsets of the L4 header and of the datagram's end.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize, p: &mut Packet) -> ParseResult<(usize, usize)> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, off)?;
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    let ihl = (ip.vihl & 0x0f) as usize;
    if ihl < 5 {
        return Err(Reason::Malformed);
    }
    let hlen = ihl * 4;
    let tot_len = be16(ip.tot_len) as usize;
    if tot_len < hlen {
        return Err(Reason::Malformed);
    }
    let end = datagram_end(ctx, off, tot_len)?;
    // Options are skipped, but they must be there.
    let _: *const [u8; 1] = ptr_in(ctx, off + hlen - 1, end)?;
    p.src4 = u32::from_be_bytes(ip.src);
    p.dst4 = u32::from_be_bytes(ip.dst);
    p.proto = ip.proto;
    p.ip_len = be16(ip.tot_len) as u32;
    p.ttl = ip.ttl;
    p.dscp = ip.tos >> 2;
    let frag = be16(ip.frag);
    p.frag = if frag & 0x1fff != 0 {
        frag::LATER
    } else if frag & 0x2000 != 0 {
        frag::FIRST
    } else {
        frag::NONE
    };
    Ok((off + hlen, end))
}

/// IPv6 and up to `IPV6_EXT_MAX` extension headers: returns the offsets of the L4 header
/// and of the datagram's end. After a fragment header with an offset, the rest is payload,
/// not headers, whatever its next-header field says.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize, p: &mut Packet) -> ParseResult<(usize, usize)> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, off)?;
    let ip = unsafe { &*ip };
    if ip.vtcfl[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    p.v6 = true;
    p.src6 = addr6(&ip.src);
    p.dst6 = addr6(&ip.dst);
    p.ip_len = be16(ip.payload_len) as u32 + size_of::<Ipv6Hdr>() as u32;
    p.ttl = ip.hop_limit;
    p.dscp = ((ip.vtcfl[0] & 0x0f) << 2) | (ip.vtcfl[1] >> 6);
    let end = datagram_end(
        ctx,
        off,
        be16(ip.payload_len) as usize + size_of::<Ipv6Hdr>(),
    )?;
    let mut nh = ip.next_header;
    let mut off = off + size_of::<Ipv6Hdr>();
    // The walk is branch-free arithmetic (`crate::arith`) but for its exits: as branches, the three
    // header lengths and the fragment states multiplied over 8 headers into ~300k verified
    // instructions (3^8 paths), in both programs.
    let mut fr = frag::NONE as u64;
    for _ in 0..IPV6_EXT_MAX {
        let n = core::hint::black_box(nh as u64);
        if ext_bit(n) == 0 || fr == frag::LATER as u64 {
            break;
        }
        let ext: *const Ipv6ExtHdr = ptr_in(ctx, off, end)?;
        let ext = unsafe { &*ext };
        let is_frag = core::hint::black_box(eq(n, IPPROTO_FRAGMENT as u64));
        let is_ah = core::hint::black_box(eq(n, IPPROTO_AH as u64));
        let hl = ext.len as u64;
        let len = pick(
            is_frag,
            size_of::<Ipv6ExtHdr>() as u64,
            pick(is_ah, (hl + 2) * 4, (hl + 1) * 8),
        );
        // A fragment header with an offset: a later fragment; offset 0 with more
        // fragments: the first; neither (an atomic fragment): unchanged. `fr` is NONE or
        // FIRST here.
        let fo = be16(ext.frag) as u64;
        let later = ((fo & 0xfff8) + 0xffff) >> 16;
        let inner = (fo & 1) | fr;
        fr = pick(is_frag, (later << 1) | (inner & (later ^ 1)), fr);
        let len = len as usize;
        // The whole extension header must be in the datagram.
        let _: *const [u8; 1] = ptr_in(ctx, off + len - 1, end)?;
        nh = ext.next_header;
        off += len;
    }
    p.frag = fr as u8;
    if ext_bit(nh as u64) != 0 && fr != frag::LATER as u64 {
        return Err(Reason::UnsupportedEncap);
    }
    p.proto = nh;
    Ok((off, end))
}

/// TCP, UDP, ICMP/ICMPv6 fields; nothing for other protocols or later fragments. Headers
/// must lie inside the datagram (`end`).
#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, end: usize, p: &mut Packet) -> ParseResult<()> {
    if p.frag == frag::LATER {
        return Ok(());
    }
    let icmp = if p.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    if p.proto == IPPROTO_TCP {
        let h: *const [u8; TCP_MIN_HLEN] = ptr_in(ctx, off, end)?;
        let h = unsafe { &*h };
        let doff = (h[12] >> 4) as usize;
        if doff < 5 {
            return Err(Reason::Malformed);
        }
        let _: *const [u8; 1] = ptr_in(ctx, off + doff * 4 - 1, end)?;
        p.sport = be16([h[0], h[1]]);
        p.dport = be16([h[2], h[3]]);
        p.tcp_flags = h[13];
        p.payload = end.saturating_sub(off + doff * 4) as u16;
        p.has_l4 = true;
    } else if p.proto == IPPROTO_UDP {
        let h: *const [u8; UDP_HLEN] = ptr_in(ctx, off, end)?;
        let h = unsafe { &*h };
        p.sport = be16([h[0], h[1]]);
        p.dport = be16([h[2], h[3]]);
        p.payload = end.saturating_sub(off + UDP_HLEN) as u16;
        p.has_l4 = true;
    } else if p.proto == icmp {
        let h: *const [u8; ICMP_HLEN] = ptr_in(ctx, off, end)?;
        let h = unsafe { &*h };
        p.icmp_type = h[0];
        p.icmp_code = h[1];
        p.has_l4 = true;
    }
    Ok(())
}

/// Parses the frame into `p`. `Err(reason)` ends the evaluation: `non_ip` passes,
/// `malformed` and `unsupported_encap` drop.
#[inline(always)]
pub fn parse(ctx: &XdpContext, p: &mut Packet) -> ParseResult<()> {
    let (proto, off, vlan) = parse_eth(ctx)?;
    *p = Packet {
        v6: false,
        src4: 0,
        dst4: 0,
        src6: (0, 0),
        dst6: (0, 0),
        proto: 0,
        frag: frag::NONE,
        has_l4: false,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        ip_len: 0,
        ttl: 0,
        dscp: 0,
        vlan,
        payload: 0,
    };
    let (l4, end) = if proto == ETH_P_IPV4 {
        parse_ipv4(ctx, off, p)?
    } else if proto == ETH_P_IPV6 {
        parse_ipv6(ctx, off, p)?
    } else {
        return Err(Reason::NonIp);
    };
    parse_l4(ctx, l4, end, p)
}
