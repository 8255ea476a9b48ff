//! A sampled packet with its decision, decoded from the ring buffer's record.

use mssp_common::{
    Reason, Verdict,
    abi::Sample,
    proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    reference::{self, L4},
};

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// When the agent read it (monotonic seconds).
    pub mono: f64,
    /// `CLOCK_BOOTTIME` nanoseconds when the data path took it.
    pub boot_ns: u64,
    /// The customer whose prefix holds the destination (0: none).
    pub customer: u32,
    pub verdict: Verdict,
    pub reason: Reason,
    pub entry: u32,
    pub rule: u32,
    /// One packet in `every` was sampled.
    pub every: u32,
    pub frame_len: u32,
    /// The headers could be read from the sampled bytes.
    pub parsed: bool,
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    /// 0 none, 1 first fragment, 2 later fragment.
    pub frag: u8,
    pub ip_len: u32,
    pub ttl: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<u8>,
    pub icmp_type: Option<u8>,
}

impl Observed {
    pub fn from_sample(s: &Sample, mono: f64) -> Observed {
        let head = &s.data[..(s.cap_len as usize).min(s.data.len())];
        let parsed = reference::parse_head(head, s.frame_len as usize).ok();
        let mut o = Observed {
            mono,
            boot_ns: s.ts_boot_ns,
            customer: s.customer_id,
            verdict: Verdict::from_u32(s.verdict).unwrap_or(Verdict::Pass),
            reason: Reason::from_u32(s.reason).unwrap_or(Reason::InternalError),
            entry: s.entry,
            rule: s.rule,
            every: s.every.max(1),
            frame_len: s.frame_len,
            parsed: parsed.is_some(),
            v6: false,
            src: 0,
            dst: 0,
            proto: 0,
            frag: 0,
            ip_len: 0,
            ttl: 0,
            sport: None,
            dport: None,
            tcp_flags: None,
            icmp_type: None,
        };
        if let Some(p) = parsed {
            o.v6 = p.v6;
            o.src = p.src;
            o.dst = p.dst;
            o.proto = p.proto;
            o.frag = p.frag;
            o.ip_len = p.ip_len;
            o.ttl = p.ttl;
            match p.l4 {
                Some(L4::Tcp {
                    sport,
                    dport,
                    flags,
                }) => {
                    o.sport = Some(sport);
                    o.dport = Some(dport);
                    o.tcp_flags = Some(flags);
                }
                Some(L4::Udp { sport, dport }) => {
                    o.sport = Some(sport);
                    o.dport = Some(dport);
                }
                Some(L4::Icmp { ty, .. }) => o.icmp_type = Some(ty),
                None => {}
            }
        }
        o
    }

    pub fn is_syn(&self) -> bool {
        self.proto == IPPROTO_TCP
            && self
                .tcp_flags
                .is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN)
    }

    pub fn is_icmp(&self) -> bool {
        (self.proto == IPPROTO_ICMP && !self.v6) || (self.proto == IPPROTO_ICMPV6 && self.v6)
    }

    pub fn is_udp(&self) -> bool {
        self.proto == IPPROTO_UDP
    }
}

/// A protocol number as the policy names it.
pub fn protocol_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// TCP flags as `syn,ack`.
pub fn tcp_flag_names(f: u8) -> String {
    const NAMES: [(u8, &str); 8] = [
        (0x01, "fin"),
        (0x02, "syn"),
        (0x04, "rst"),
        (0x08, "psh"),
        (0x10, "ack"),
        (0x20, "urg"),
        (0x40, "ece"),
        (0x80, "cwr"),
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join(",")
}
