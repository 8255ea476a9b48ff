//! A small frame builder for test packets: Ethernet, VLAN tags, IPv4 (options, fragments),
//! IPv6 (extension headers), TCP, UDP, ICMP/ICMPv6. Checksums are left zero: XDP does not
//! look at them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv6 extension header types the builder knows how to lay out.
pub mod ext {
    pub const HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const DSTOPTS: u8 = 60;
}

#[derive(Clone, Debug)]
pub enum L4 {
    None {
        proto: u8,
        payload: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: usize,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        doff: u8,
        payload: usize,
    },
    Icmp {
        ty: u8,
        code: u8,
        payload: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Frame {
    /// (TPID, VLAN id), outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// IPv4: header length in 32-bit words (5 = no options).
    pub ihl: u8,
    /// IPv4: the flags-and-fragment-offset word.
    pub frag: u16,
    /// IPv6: extension headers (type, 8-byte units of length beyond the first 8 / AH units),
    /// in order. For a fragment header the second field is the offset-and-flags word.
    pub exts: Vec<(u8, u16)>,
    /// Overrides the IP version nibble.
    pub version: Option<u8>,
    pub ttl: u8,
    pub tos: u8,
}

pub fn addr(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
}

impl Frame {
    pub fn new(src: &str, dst: &str) -> Frame {
        let src = addr(src);
        let dst = addr(dst);
        assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed families");
        Frame {
            vlans: Vec::new(),
            src,
            dst,
            l4: L4::Udp {
                sport: 40000,
                dport: 53,
                payload: 16,
            },
            ihl: 5,
            frag: 0,
            exts: Vec::new(),
            version: None,
            ttl: 64,
            tos: 0,
        }
    }

    pub fn udp(mut self, sport: u16, dport: u16) -> Frame {
        self.l4 = L4::Udp {
            sport,
            dport,
            payload: 16,
        };
        self
    }

    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Frame {
        self.l4 = L4::Tcp {
            sport,
            dport,
            flags,
            doff: 5,
            payload: 0,
        };
        self
    }

    pub fn icmp(mut self, ty: u8, code: u8) -> Frame {
        self.l4 = L4::Icmp {
            ty,
            code,
            payload: 8,
        };
        self
    }

    pub fn proto(mut self, proto: u8, payload: usize) -> Frame {
        self.l4 = L4::None { proto, payload };
        self
    }

    pub fn vlan(mut self, tpid: u16, id: u16) -> Frame {
        self.vlans.push((tpid, id));
        self
    }

    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }

    fn l4_bytes(&self) -> (u8, Vec<u8>) {
        let v6 = self.is_v6();
        match &self.l4 {
            L4::None { proto, payload } => (*proto, vec![0xab; *payload]),
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                let mut b = Vec::new();
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(((8 + payload) as u16).to_be_bytes());
                b.extend([0, 0]);
                b.extend(vec![0xcd; *payload]);
                (17, b)
            }
            L4::Tcp {
                sport,
                dport,
                flags,
                doff,
                payload,
            } => {
                let mut b = Vec::new();
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend([0, 0, 0, 1, 0, 0, 0, 0]);
                b.push(doff << 4);
                b.push(*flags);
                b.extend([0xff, 0xff, 0, 0, 0, 0]);
                // Options to fill the data offset.
                let hlen = (*doff as usize * 4).max(20);
                b.resize(hlen, 1);
                b.extend(vec![0xee; *payload]);
                (6, b)
            }
            L4::Icmp { ty, code, payload } => {
                let mut b = vec![*ty, *code, 0, 0, 0, 1, 0, 1];
                b.extend(vec![0x11; *payload]);
                (if v6 { 58 } else { 1 }, b)
            }
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for (tpid, id) in &self.vlans {
            f.extend(tpid.to_be_bytes());
            f.extend(id.to_be_bytes());
        }
        let (proto, l4) = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(0x0800u16.to_be_bytes());
                let hlen = self.ihl as usize * 4;
                let total = hlen.max(20) + l4.len();
                let ver = self.version.unwrap_or(4);
                f.push((ver << 4) | self.ihl);
                f.push(self.tos);
                f.extend((total as u16).to_be_bytes());
                f.extend([0x12, 0x34]);
                f.extend(self.frag.to_be_bytes());
                f.push(self.ttl);
                f.push(proto);
                f.extend([0, 0]);
                f.extend(s.octets());
                f.extend(d.octets());
                // Options (NOPs) up to the header length.
                for _ in 20..hlen {
                    f.push(1);
                }
                f.extend(l4);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(0x86ddu16.to_be_bytes());
                let mut exts = Vec::new();
                let types: Vec<u8> = self.exts.iter().map(|e| e.0).chain([proto]).collect();
                for (i, (ty, arg)) in self.exts.iter().enumerate() {
                    let next = types[i + 1];
                    match *ty {
                        ext::FRAGMENT => {
                            exts.extend([next, 0]);
                            exts.extend(arg.to_be_bytes());
                            exts.extend([0, 0, 0, 7]);
                        }
                        ext::AH => {
                            // Length in 4-byte units minus 2.
                            let len = (*arg as usize + 2) * 4;
                            exts.extend([next, *arg as u8]);
                            exts.extend(vec![0x22; len - 2]);
                        }
                        _ => {
                            let len = (*arg as usize + 1) * 8;
                            exts.extend([next, *arg as u8]);
                            exts.extend(vec![0x01, 0x00]);
                            exts.extend(vec![0; len - 4]);
                        }
                    }
                }
                let first = types[0];
                let ver = self.version.unwrap_or(6);
                f.push((ver << 4) | (self.tos >> 4));
                f.push(self.tos << 4);
                f.extend([0, 0]);
                f.extend(((exts.len() + l4.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl);
                f.extend(s.octets());
                f.extend(d.octets());
                f.extend(exts);
                f.extend(l4);
            }
            _ => unreachable!("families checked in new"),
        }
        f
    }
}

/// A frame of an arbitrary ethertype (ARP, LLDP, ...).
pub fn raw(ethertype: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 2]);
    f.extend(ethertype.to_be_bytes());
    f.extend(vec![0; payload]);
    f
}

/// Offsets of the header boundaries in a built frame: (name, offset where it starts).
pub fn boundaries(frame: &Frame) -> Vec<(&'static str, usize)> {
    let mut v = vec![("ethernet", 0)];
    let mut off = 14;
    for _ in &frame.vlans {
        // A tag's TCI and the next ethertype; its TPID sits where the ethertype would.
        v.push(("vlan", off));
        off += 4;
    }
    v.push(("ip", off));
    if frame.is_v6() {
        off += 40;
        for (ty, arg) in &frame.exts {
            v.push(("ext", off));
            off += match *ty {
                ext::FRAGMENT => 8,
                ext::AH => (*arg as usize + 2) * 4,
                _ => (*arg as usize + 1) * 8,
            };
        }
    } else {
        off += frame.ihl as usize * 4;
    }
    v.push(("l4", off));
    v
}

pub fn v4(a: &str) -> Ipv4Addr {
    a.parse().expect("IPv4 test address")
}

pub fn v6(a: &str) -> Ipv6Addr {
    a.parse().expect("IPv6 test address")
}
