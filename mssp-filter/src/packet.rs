//! A steered frame as the inspector reads it: Ethernet (up to two VLAN tags), IPv4 or IPv6
//! (no extension headers: XDP only steers what it parsed, and the inspector passes anything
//! else), and the TCP or UDP header with its payload.

use std::net::IpAddr;

use mssp_common::filter::FlowKey;

pub const ETH_HLEN: usize = 14;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3: usize,
    pub l4: usize,
    pub payload: std::ops::Range<usize>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub tcp_flags: u8,
    pub ttl: u8,
}

impl Frame {
    pub fn tcp(&self) -> bool {
        self.proto == PROTO_TCP
    }

    pub fn flow(&self) -> FlowKey {
        let words = |a: IpAddr| match a {
            IpAddr::V4(a) => [u32::from(a), 0, 0, 0],
            IpAddr::V6(a) => {
                let o = a.octets();
                let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                [w(0), w(4), w(8), w(12)]
            }
        };
        FlowKey {
            src: words(self.src),
            dst: words(self.dst),
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            v6: self.src.is_ipv6() as u8,
            pad: [0; 2],
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The frame's headers, or `None` for anything the inspector does not read (it passes).
pub fn parse(f: &[u8]) -> Option<Frame> {
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(f, 12)?;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            ethertype = be16(f, l3 + 2)?;
            l3 += 4;
        }
    }
    let (src, dst, proto, l4, end, ttl) = match ethertype {
        0x0800 => {
            let vihl = *f.get(l3)?;
            let ihl = (vihl & 0xf) as usize * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            let frag = be16(f, l3 + 6)?;
            if frag & 0x3fff != 0 {
                return None;
            }
            let tot = be16(f, l3 + 2)? as usize;
            let a = |at: usize| -> Option<IpAddr> {
                Some(IpAddr::from(<[u8; 4]>::try_from(f.get(at..at + 4)?).ok()?))
            };
            (
                a(l3 + 12)?,
                a(l3 + 16)?,
                *f.get(l3 + 9)?,
                l3 + ihl,
                l3 + tot,
                *f.get(l3 + 8)?,
            )
        }
        0x86dd => {
            if *f.get(l3)? >> 4 != 6 {
                return None;
            }
            let plen = be16(f, l3 + 4)? as usize;
            let a = |at: usize| -> Option<IpAddr> {
                Some(IpAddr::from(
                    <[u8; 16]>::try_from(f.get(at..at + 16)?).ok()?,
                ))
            };
            (
                a(l3 + 8)?,
                a(l3 + 24)?,
                *f.get(l3 + 6)?,
                l3 + 40,
                l3 + 40 + plen,
                *f.get(l3 + 7)?,
            )
        }
        _ => return None,
    };
    if end > f.len() || l4 > end {
        return None;
    }
    let sport = be16(f, l4)?;
    let dport = be16(f, l4 + 2)?;
    let (seq, ack, tcp_flags, data) = match proto {
        PROTO_TCP => {
            let doff = (*f.get(l4 + 12)? >> 4) as usize * 4;
            if doff < 20 {
                return None;
            }
            (
                be32(f, l4 + 4)?,
                be32(f, l4 + 8)?,
                *f.get(l4 + 13)?,
                l4 + doff,
            )
        }
        PROTO_UDP => (0, 0, 0, l4 + 8),
        _ => return None,
    };
    if data > end {
        return None;
    }
    Some(Frame {
        l3,
        l4,
        payload: data..end,
        src,
        dst,
        proto,
        sport,
        dport,
        seq,
        ack,
        tcp_flags,
        ttl,
    })
}

/// The ports XDP steers.
#[allow(non_snake_case)]
pub mod PORT {
    pub use mssp_common::filter::{PORT_DNS as DNS, PORT_HTTP as HTTP, PORT_HTTPS as HTTPS};
}
