//! Frames mssp sends to a customer's client in the name of the destination: a DNS answer
//! (UDP, or TCP with the connection closed after it) and a TCP reset. Each goes back out
//! of the customer interface it came in on, addressed from the server to the client.

use std::net::IpAddr;

use crate::packet::{ETH_HLEN, Frame, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST};

fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Ethernet (addresses swapped, tags kept) and an IP header from `from` to `to` for an L4
/// segment `l4` (whose checksum field, at `csum_at`, is filled in here).
fn frame(orig: &[u8], f: &Frame, proto: u8, mut l4: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let (from, to) = (f.dst, f.src);
    let mut out = Vec::with_capacity(f.l3 + 40 + l4.len());
    out.extend_from_slice(&orig[6..12]);
    out.extend_from_slice(&orig[0..6]);
    out.extend_from_slice(&orig[12..f.l3]);
    let (src, dst) = (octets(from), octets(to));
    let mut pseudo = sum(&src, sum(&dst, 0));
    pseudo += proto as u32 + l4.len() as u32;
    let c = fold(sum(&l4, pseudo));
    // A UDP checksum of 0 means "none"; send all ones instead.
    let c = if c == 0 && proto == PROTO_UDP {
        0xffff
    } else {
        c
    };
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    match from {
        IpAddr::V4(_) => {
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&src);
            ip[16..20].copy_from_slice(&dst);
            let c = fold(sum(&ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        IpAddr::V6(_) => {
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&src);
            ip[24..40].copy_from_slice(&dst);
            out.extend_from_slice(&ip);
        }
    }
    out.extend_from_slice(&l4);
    debug_assert!(out.len() >= ETH_HLEN);
    out
}

/// A UDP datagram answering `f` with `payload`.
pub fn udp(orig: &[u8], f: &Frame, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&f.dport.to_be_bytes());
    l4.extend_from_slice(&f.sport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    frame(orig, f, PROTO_UDP, l4, 6)
}

fn tcp(orig: &[u8], f: &Frame, flags: u8, payload: &[u8]) -> Vec<u8> {
    let seen = (f.payload.end - f.payload.start) as u32;
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&f.dport.to_be_bytes());
    l4.extend_from_slice(&f.sport.to_be_bytes());
    // The server's next sequence number is what the client acknowledges.
    l4.extend_from_slice(&f.ack.to_be_bytes());
    l4.extend_from_slice(&f.seq.wrapping_add(seen).to_be_bytes());
    l4.push(5 << 4);
    l4.push(flags);
    let window: u16 = if flags & TCP_RST != 0 { 0 } else { 65535 };
    l4.extend_from_slice(&window.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    frame(orig, f, PROTO_TCP, l4, 16)
}

/// A reset of the client's connection, from the server, acknowledging what `f` carried.
pub fn tcp_reset(orig: &[u8], f: &Frame) -> Vec<u8> {
    tcp(orig, f, TCP_RST | TCP_ACK, &[])
}

/// A DNS answer over TCP (`msg` gets its two-byte length here), with the connection closed.
pub fn tcp_dns(orig: &[u8], f: &Frame, msg: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + msg.len());
    p.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    p.extend_from_slice(msg);
    tcp(orig, f, TCP_PSH | TCP_ACK | TCP_FIN, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet;

    /// A UDP query frame from 198.19.7.10:5353 to 198.18.53.53:53.
    fn query() -> Vec<u8> {
        let payload = b"hello";
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[198, 19, 7, 10]);
        ip[16..20].copy_from_slice(&[198, 18, 53, 53]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&5353u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn an_answer_goes_back_from_the_server_with_valid_checksums() {
        let q = query();
        let f = packet::parse(&q).unwrap();
        let r = udp(&q, &f, b"answer!");
        let rf = packet::parse(&r).unwrap();
        assert_eq!((rf.src, rf.dst), (f.dst, f.src));
        assert_eq!((rf.sport, rf.dport), (53, 5353));
        assert_eq!(&r[0..6], &q[6..12]);
        assert_eq!(&r[rf.payload.clone()], b"answer!");
        // Both checksums verify (a sum over the covered bytes folds to 0).
        assert_eq!(fold(sum(&r[14..34], 0)), 0);
        let mut pseudo = sum(&r[26..34], 0) + 17 + (r.len() - 34) as u32;
        pseudo = sum(&r[34..], pseudo);
        assert_eq!(fold(pseudo), 0);
    }
}

/// Recomputes the TCP or UDP checksum of a frame in place. A frame from the wire already
/// carries the right sum (it comes out the same); one a local sender handed to a veth
/// carries only the pseudo-header's (checksum offload), which the kernel would complete on
/// the way out but which AF_XDP strips of that promise: re-injected as it is, the receiver
/// would drop it.
pub fn fix_checksum(frame: &mut [u8], f: &Frame) {
    let (csum_at, proto) = match f.proto {
        PROTO_TCP => (f.l4 + 16, PROTO_TCP),
        PROTO_UDP => (f.l4 + 6, PROTO_UDP),
        _ => return,
    };
    let end = f.payload.end;
    if csum_at + 2 > end || end > frame.len() {
        return;
    }
    if proto == PROTO_UDP && f.src.is_ipv4() && frame[csum_at] == 0 && frame[csum_at + 1] == 0 {
        return; // IPv4 UDP without a checksum stays so.
    }
    frame[csum_at] = 0;
    frame[csum_at + 1] = 0;
    let (src, dst) = (octets(f.src), octets(f.dst));
    let len = end - f.l4;
    let pseudo = sum(&src, sum(&dst, 0)) + proto as u32 + len as u32;
    let c = fold(sum(&frame[f.l4..end], pseudo));
    let c = if c == 0 && proto == PROTO_UDP {
        0xffff
    } else {
        c
    };
    frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
}
