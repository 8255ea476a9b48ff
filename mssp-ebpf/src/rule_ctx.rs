//! The rule loop's context: the packet fields rules look at and what the loop decided. In the
//! library so that the program's map of it (`RULE_CTX`) and the rules that use it need not
//! import each other.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use mssp_common::{
    abi::frag_bits,
    proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP},
};

use crate::parse::{Packet, frag};

/// What the rules decided.
pub mod outcome {
    /// No terminal rule matched.
    pub const NONE: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    /// Over a rate limit.
    pub const LIMITED: u32 = 3;
}

/// The packet fields rules look at, copied where the `bpf_loop` callback can read them: the
/// program's per-CPU `RULE_CTX` map (see there why not the stack).
#[repr(C)]
pub struct RuleCtx {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub bytes: u64,
    pub now16: u64,
    pub rules_start: u32,
    pub v6: u32,
    pub proto: u32,
    pub frag_bit: u32,
    pub has_l4: u32,
    pub sport: u32,
    pub dport: u32,
    pub tcp_flags: u32,
    pub is_tcp: u32,
    pub is_icmp: u32,
    pub icmp_type: u32,
    pub icmp_code: u32,
    pub ip_len: u32,
    pub ttl: u32,
    pub dscp: u32,
    /// Outer VLAN id, or 0xffff when untagged.
    pub vlan: u32,
    pub outcome: u32,
    pub rule_id: u32,
}

impl RuleCtx {
    #[inline(always)]
    pub fn new(p: &Packet, bytes: u64, rules_start: u32) -> RuleCtx {
        let (src, dst) = if p.v6 {
            (words(p.src6), words(p.dst6))
        } else {
            ([p.src4, 0, 0, 0], [p.dst4, 0, 0, 0])
        };
        let icmp = if p.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
        RuleCtx {
            src,
            dst,
            bytes,
            now16: 0,
            rules_start,
            v6: p.v6 as u32,
            proto: p.proto as u32,
            frag_bit: match p.frag {
                frag::NONE => frag_bits::NONE,
                frag::FIRST => frag_bits::FIRST,
                _ => frag_bits::LATER,
            },
            has_l4: p.has_l4 as u32,
            sport: p.sport as u32,
            dport: p.dport as u32,
            tcp_flags: p.tcp_flags as u32,
            is_tcp: (p.has_l4 && p.proto == IPPROTO_TCP) as u32,
            is_icmp: (p.has_l4 && p.proto == icmp) as u32,
            icmp_type: p.icmp_type as u32,
            icmp_code: p.icmp_code as u32,
            ip_len: p.ip_len,
            ttl: p.ttl as u32,
            dscp: p.dscp as u32,
            vlan: p.vlan as u32,
            outcome: outcome::NONE,
            rule_id: 0,
        }
    }

    pub fn now(&mut self) -> u64 {
        if self.now16 == 0 {
            self.now16 = unsafe { bpf_ktime_get_ns() }.wrapping_mul(16);
        }
        self.now16
    }
}

#[inline(always)]
fn words(a: (u64, u64)) -> [u32; 4] {
    [
        (a.0 >> 32) as u32,
        a.0 as u32,
        (a.1 >> 32) as u32,
        a.1 as u32,
    ]
}

