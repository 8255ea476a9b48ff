//! One packet described by its fields (`mssp explain`), built as the frame the data path
//! would see: Ethernet (optionally one 802.1Q tag), IPv4 or IPv6, then TCP, UDP, ICMP/ICMPv6
//! or any other protocol's payload.

use std::net::IpAddr;

use mssp_common::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

/// A packet to explain. Ports, flags and ICMP fields apply to their protocols only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// IP total length (IPv6: payload length + 40); the smallest possible when `None`.
    pub length: Option<u32>,
    pub ttl: u8,
    pub dscp: u8,
    pub vlan: Option<u16>,
}

impl Probe {
    /// A UDP probe between two addresses with defaults for everything else.
    pub fn new(src: IpAddr, dst: IpAddr) -> Probe {
        Probe {
            src,
            dst,
            proto: IPPROTO_UDP,
            sport: 40_000,
            dport: 0,
            tcp_flags: 0x02,
            icmp_type: 8,
            icmp_code: 0,
            length: None,
            ttl: 64,
            dscp: 0,
            vlan: None,
        }
    }

    /// The frame, or why these fields make none.
    pub fn frame(&self) -> Result<Vec<u8>, String> {
        let v6 = match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => false,
            (IpAddr::V6(_), IpAddr::V6(_)) => true,
            _ => return Err("--src and --dst must be of the same family".into()),
        };
        let icmp = if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
        let mut l4: Vec<u8> = match self.proto {
            IPPROTO_TCP => {
                let mut h = Vec::with_capacity(20);
                h.extend(self.sport.to_be_bytes());
                h.extend(self.dport.to_be_bytes());
                h.extend([
                    0,
                    0,
                    0,
                    1,
                    0,
                    0,
                    0,
                    0,
                    0x50,
                    self.tcp_flags,
                    0xff,
                    0xff,
                    0,
                    0,
                    0,
                    0,
                ]);
                h
            }
            IPPROTO_UDP => {
                let mut h = Vec::with_capacity(8);
                h.extend(self.sport.to_be_bytes());
                h.extend(self.dport.to_be_bytes());
                h.extend([0, 8, 0, 0]);
                h
            }
            p if p == icmp => vec![self.icmp_type, self.icmp_code, 0, 0, 0, 0, 0, 0],
            _ => Vec::new(),
        };
        let ip_hlen = if v6 { 40 } else { 20 };
        let minimum = (ip_hlen + l4.len()) as u32;
        let total = self.length.unwrap_or(minimum);
        if total < minimum {
            return Err(format!(
                "--length {total} is shorter than the headers ({minimum} bytes)"
            ));
        }
        if total > 65_535 + if v6 { 40 } else { 0 } {
            return Err(format!("--length {total} is over what IP carries"));
        }
        l4.resize(total as usize - ip_hlen, 0x5a);
        if self.proto == IPPROTO_UDP {
            let n = l4.len() as u16;
            l4[4..6].copy_from_slice(&n.to_be_bytes());
        }
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
        if let Some(id) = self.vlan {
            f.extend(0x8100u16.to_be_bytes());
            f.extend((id & 0x0fff).to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(0x0800u16.to_be_bytes());
                f.extend([0x45, self.dscp << 2]);
                f.extend((total as u16).to_be_bytes());
                f.extend([0, 0, 0, 0, self.ttl, self.proto, 0, 0]);
                f.extend(s.octets());
                f.extend(d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(0x86ddu16.to_be_bytes());
                f.extend([0x60 | (self.dscp >> 2), (self.dscp & 3) << 6, 0, 0]);
                f.extend(((total - 40) as u16).to_be_bytes());
                f.extend([self.proto, self.ttl]);
                f.extend(s.octets());
                f.extend(d.octets());
            }
            _ => unreachable!("families checked above"),
        }
        f.extend(l4);
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_back_to_their_fields() {
        let mut p = Probe::new("198.18.1.1".parse().unwrap(), "198.19.7.9".parse().unwrap());
        p.proto = IPPROTO_TCP;
        p.dport = 443;
        p.length = Some(600);
        p.vlan = Some(7);
        let f = p.frame().unwrap();
        let r = mssp_common::reference::parse(&f).expect("parses");
        assert_eq!((r.proto, r.ip_len, r.vlan), (IPPROTO_TCP, 600, Some(7)));
        let p6 = Probe::new(
            "2001:db8::1".parse().unwrap(),
            "2001:db8:7::1".parse().unwrap(),
        );
        let r = mssp_common::reference::parse(&p6.frame().unwrap()).expect("parses");
        assert!(r.v6);
        assert!(
            Probe {
                length: Some(10),
                ..p6
            }
            .frame()
            .is_err()
        );
    }
}
