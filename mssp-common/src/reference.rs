//! The reference classifier: the evaluation contract of the design brief written as plainly as
//! possible — slices instead of bounded pointer reads, linear scans instead of search trees.
//! It shares no code with the XDP program or the policy compiler, so when the differential
//! test finds the two agreeing on random packets and policies, both are likely right.

use alloc::vec::Vec;

use crate::{Reason, Verdict, abi::SourceAction, net::Net, proto::*};

/// A source entry (global or customer list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefSource {
    pub net: Net,
    pub action: SourceAction,
    /// Not in effect at or after this time (Unix nanoseconds).
    pub expires_unix_ns: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefCustomer {
    pub id: u32,
    pub prefixes: Vec<Net>,
    pub sources: Vec<RefSource>,
    /// In evaluation order.
    pub rules: Vec<RefRule>,
}

/// What a rule does. The reference does not model time: a rate-limited rule is treated as
/// within its limit (the differential test uses limits no test can exceed; limiting itself is
/// tested against time in the rate tests), and the customer's clean-pipe limit likewise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefRuleAction {
    Drop,
    Pass,
    Monitor,
    RateLimit,
}

/// Fragment positions: 0 none, 1 first, 2 later (as [`Parsed::frag`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefRule {
    pub id: u32,
    pub protocol: Option<Vec<u8>>,
    pub sources: Option<Vec<Net>>,
    pub destinations: Option<Vec<Net>>,
    pub src_ports: Option<Vec<(u16, u16)>>,
    pub dst_ports: Option<Vec<(u16, u16)>>,
    pub tcp_flags: Option<(u8, u8)>,
    pub icmp_type: Option<Vec<u8>>,
    pub icmp_code: Option<Vec<u8>>,
    pub length: Option<(u32, u32)>,
    pub ttl: Option<(u8, u8)>,
    pub dscp: Option<Vec<u8>>,
    /// Allowed fragment positions (0 none, 1 first, 2 later).
    pub fragment: Option<Vec<u8>>,
    pub vlan: Option<Vec<u16>>,
    pub action: Option<RefRuleAction>,
}

impl RefRule {
    fn matches(&self, p: &Parsed) -> bool {
        let needs_l4 = self.src_ports.is_some()
            || self.dst_ports.is_some()
            || self.tcp_flags.is_some()
            || self.icmp_type.is_some()
            || self.icmp_code.is_some();
        if needs_l4 && p.l4.is_none() {
            return false;
        }
        let any = |list: &Option<Vec<u8>>, v: u8| list.as_ref().is_none_or(|l| l.contains(&v));
        let ports = |list: &Option<Vec<(u16, u16)>>, pick: fn(&L4) -> Option<u16>| {
            list.as_ref().is_none_or(|l| {
                p.l4.as_ref()
                    .and_then(pick)
                    .is_some_and(|port| l.iter().any(|(a, b)| *a <= port && port <= *b))
            })
        };
        let icmp = |list: &Option<Vec<u8>>, pick: fn(u8, u8) -> u8| {
            list.as_ref().is_none_or(|l| match p.l4 {
                Some(L4::Icmp { ty, code }) => l.contains(&pick(ty, code)),
                _ => false,
            })
        };
        let nets = |list: &Option<Vec<Net>>, addr: u128| {
            list.as_ref()
                .is_none_or(|l| l.iter().any(|n| n.contains(p.v6, addr)))
        };
        any(&self.protocol, p.proto)
            && ports(&self.src_ports, |l| match l {
                L4::Tcp { sport, .. } | L4::Udp { sport, .. } => Some(*sport),
                L4::Icmp { .. } => None,
            })
            && ports(&self.dst_ports, |l| match l {
                L4::Tcp { dport, .. } | L4::Udp { dport, .. } => Some(*dport),
                L4::Icmp { .. } => None,
            })
            && self.tcp_flags.is_none_or(|(set, unset)| match p.l4 {
                Some(L4::Tcp { flags, .. }) => flags & set == set && flags & unset == 0,
                _ => false,
            })
            && icmp(&self.icmp_type, |t, _| t)
            && icmp(&self.icmp_code, |_, c| c)
            && self
                .length
                .is_none_or(|(lo, hi)| lo <= p.ip_len && p.ip_len <= hi)
            && self.ttl.is_none_or(|(lo, hi)| lo <= p.ttl && p.ttl <= hi)
            && any(&self.dscp, p.dscp)
            && any(&self.fragment, p.frag)
            && self
                .vlan
                .as_ref()
                .is_none_or(|l| p.vlan.is_some_and(|v| l.contains(&v)))
            && nets(&self.sources, p.src)
            && nets(&self.destinations, p.dst)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefPolicy {
    pub infrastructure: Vec<Net>,
    pub global: Vec<RefSource>,
    pub customers: Vec<RefCustomer>,
}

/// Header fields the evaluation looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    /// 0 none, 1 first fragment, 2 later fragment.
    pub frag: u8,
    pub l4: Option<L4>,
    pub ip_len: u32,
    pub ttl: u8,
    pub dscp: u8,
    pub vlan: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    Icmp { ty: u8, code: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefDecision {
    pub verdict: Verdict,
    pub reason: Reason,
    pub customer: Option<u32>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn need(frame: &[u8], off: usize, len: usize) -> Result<(), Reason> {
    if off + len <= frame.len() {
        Ok(())
    } else {
        Err(Reason::Malformed)
    }
}

/// Step 1 of the contract.
/// Where the datagram claimed by the IP header ends: refused (malformed) when the frame is
/// shorter, or longer beyond Ethernet's minimum-size padding (60 bytes, 4 more per tag).
fn datagram_end(wire_len: usize, l3: usize, claimed: usize) -> Result<usize, Reason> {
    let carried = wire_len - l3;
    if claimed > carried {
        return Err(Reason::Malformed);
    }
    if claimed < carried && wire_len > ETH_MIN_FRAME + (l3 - ETH_HLEN) {
        return Err(Reason::Malformed);
    }
    Ok(l3 + claimed)
}

pub fn parse(frame: &[u8]) -> Result<Parsed, Reason> {
    parse_head(frame, frame.len())
}

/// [`parse`] of a frame of `wire_len` bytes of which only the first ones, `head`, are at
/// hand (a sampled packet): the lengths are checked against the whole frame, the headers
/// read from the head (one that does not fit in it is malformed here).
pub fn parse_head(head: &[u8], wire_len: usize) -> Result<Parsed, Reason> {
    let frame = head;
    let wire_len = wire_len.max(frame.len());
    need(frame, 0, ETH_HLEN)?;
    let mut ethertype = be16(frame, 12).ok_or(Reason::Malformed)?;
    let mut off = ETH_HLEN;
    let mut vlan = None;
    let mut tags = 0;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if tags == VLAN_MAX_DEPTH {
            return Err(Reason::UnsupportedEncap);
        }
        need(frame, off, VLAN_HLEN)?;
        if tags == 0 {
            vlan = Some(be16(frame, off).ok_or(Reason::Malformed)? & 0x0fff);
        }
        ethertype = be16(frame, off + 2).ok_or(Reason::Malformed)?;
        off += VLAN_HLEN;
        tags += 1;
    }
    let mut p = Parsed {
        vlan,
        ..Parsed::default()
    };
    let l4_off;
    let end;
    match ethertype {
        ETH_P_IPV4 => {
            need(frame, off, IPV4_MIN_HLEN)?;
            let h = &frame[off..];
            if h[0] >> 4 != 4 {
                return Err(Reason::Malformed);
            }
            let ihl = (h[0] & 0xf) as usize;
            if ihl < 5 {
                return Err(Reason::Malformed);
            }
            need(frame, off, ihl * 4)?;
            p.dscp = h[1] >> 2;
            p.ip_len = u16::from_be_bytes([h[2], h[3]]) as u32;
            if (p.ip_len as usize) < ihl * 4 {
                return Err(Reason::Malformed);
            }
            end = datagram_end(wire_len, off, p.ip_len as usize)?.min(frame.len());
            let fragword = u16::from_be_bytes([h[6], h[7]]);
            p.frag = if fragword & 0x1fff != 0 {
                2
            } else if fragword & 0x2000 != 0 {
                1
            } else {
                0
            };
            p.ttl = h[8];
            p.proto = h[9];
            p.src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as u128;
            p.dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]) as u128;
            l4_off = off + ihl * 4;
        }
        ETH_P_IPV6 => {
            need(frame, off, IPV6_HLEN)?;
            let h = &frame[off..];
            if h[0] >> 4 != 6 {
                return Err(Reason::Malformed);
            }
            p.v6 = true;
            p.dscp = ((h[0] & 0xf) << 2) | (h[1] >> 6);
            p.ip_len = u16::from_be_bytes([h[4], h[5]]) as u32 + IPV6_HLEN as u32;
            end = datagram_end(wire_len, off, p.ip_len as usize)?.min(frame.len());
            p.ttl = h[7];
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            p.src = u128::from_be_bytes(src);
            p.dst = u128::from_be_bytes(dst);
            let mut nh = h[6];
            let mut at = off + IPV6_HLEN;
            let mut walked = 0;
            // After a fragment header with an offset, the rest is payload.
            while is_ipv6_ext(nh) && p.frag != 2 {
                if walked == IPV6_EXT_MAX {
                    return Err(Reason::UnsupportedEncap);
                }
                need(&frame[..end], at, IPV6_EXT_MIN_LEN)?;
                let e = &frame[at..];
                let len = match nh {
                    IPPROTO_FRAGMENT => {
                        let fo = u16::from_be_bytes([e[2], e[3]]);
                        if fo >> 3 != 0 {
                            p.frag = 2;
                        } else if fo & 1 != 0 && p.frag == 0 {
                            p.frag = 1;
                        }
                        8
                    }
                    IPPROTO_AH => (e[1] as usize + 2) * 4,
                    _ => (e[1] as usize + 1) * 8,
                };
                need(&frame[..end], at, len)?;
                nh = e[0];
                at += len;
                walked += 1;
            }
            p.proto = nh;
            l4_off = at;
        }
        _ => return Err(Reason::NonIp),
    }
    // Transport headers are read within the datagram, never from padding.
    let frame = &frame[..end];
    if p.frag != 2 {
        let icmp = if p.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
        if p.proto == IPPROTO_TCP {
            need(frame, l4_off, TCP_MIN_HLEN)?;
            let t = &frame[l4_off..];
            let doff = (t[12] >> 4) as usize;
            if doff < 5 {
                return Err(Reason::Malformed);
            }
            need(frame, l4_off, doff * 4)?;
            p.l4 = Some(L4::Tcp {
                sport: u16::from_be_bytes([t[0], t[1]]),
                dport: u16::from_be_bytes([t[2], t[3]]),
                flags: t[13],
            });
        } else if p.proto == IPPROTO_UDP {
            need(frame, l4_off, UDP_HLEN)?;
            let u = &frame[l4_off..];
            p.l4 = Some(L4::Udp {
                sport: u16::from_be_bytes([u[0], u[1]]),
                dport: u16::from_be_bytes([u[2], u[3]]),
            });
        } else if p.proto == icmp {
            need(frame, l4_off, ICMP_HLEN)?;
            p.l4 = Some(L4::Icmp {
                ty: frame[l4_off],
                code: frame[l4_off + 1],
            });
        }
    }
    Ok(p)
}

fn in_effect(s: &RefSource, now_unix_ns: u64) -> bool {
    s.expires_unix_ns.is_none_or(|e| now_unix_ns < e)
}

/// Longest-prefix match by linear scan.
fn best_source(list: &[RefSource], v6: bool, addr: u128, now_unix_ns: u64) -> Option<&RefSource> {
    list.iter()
        .filter(|s| in_effect(s, now_unix_ns) && s.net.contains(v6, addr))
        .max_by_key(|s| s.net.len)
}

/// Steps 1-8 of the contract for one frame at time `now_unix_ns`.
pub fn classify(policy: &RefPolicy, frame: &[u8], now_unix_ns: u64) -> RefDecision {
    let p = match parse(frame) {
        Ok(p) => p,
        Err(reason) => {
            let verdict = if reason == Reason::NonIp {
                Verdict::Pass
            } else {
                Verdict::Drop
            };
            return RefDecision {
                verdict,
                reason,
                customer: None,
            };
        }
    };
    // Step 3 (also decides which customer an infrastructure packet is counted under).
    let customer = policy
        .customers
        .iter()
        .flat_map(|c| c.prefixes.iter().map(move |n| (c, n)))
        .filter(|(_, n)| n.contains(p.v6, p.dst))
        .max_by_key(|(_, n)| n.len)
        .map(|(c, _)| c);
    let decide = |verdict, reason| RefDecision {
        verdict,
        reason,
        customer: customer.map(|c| c.id),
    };
    // Step 2.
    if policy
        .infrastructure
        .iter()
        .any(|n| n.contains(p.v6, p.src) || n.contains(p.v6, p.dst))
    {
        return decide(Verdict::Pass, Reason::Infrastructure);
    }
    // Step 4.
    let own = customer.and_then(|c| best_source(&c.sources, p.v6, p.src, now_unix_ns));
    if own.is_some_and(|s| s.action == SourceAction::Allow) {
        return decide(Verdict::Pass, Reason::Allowlisted);
    }
    // Step 5.
    if best_source(&policy.global, p.v6, p.src, now_unix_ns)
        .is_some_and(|s| s.action == SourceAction::Drop)
    {
        return decide(Verdict::Drop, Reason::GlobalBlock);
    }
    // Step 6.
    if own.is_some_and(|s| s.action == SourceAction::Drop) {
        return decide(Verdict::Drop, Reason::CustomerBlock);
    }
    // Step 7: rules in order, the first terminal one that matches.
    if let Some(c) = customer {
        for r in &c.rules {
            if !r.matches(&p) {
                continue;
            }
            match r.action {
                Some(RefRuleAction::Drop) => return decide(Verdict::Drop, Reason::Rule),
                Some(RefRuleAction::Pass) | Some(RefRuleAction::RateLimit) => {
                    return decide(Verdict::Pass, Reason::Rule);
                }
                _ => {}
            }
        }
    }
    // Step 8.
    decide(Verdict::Pass, Reason::Default)
}
