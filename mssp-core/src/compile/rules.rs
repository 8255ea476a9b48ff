//! Validated rules -> the data path's [`Rule`] and [`RuleCidr`] records, and rate specs ->
//! GCRA parameters.

use mssp_common::{
    Net,
    abi::{
        RULE_MAX_PORT_RANGES, RULE_MAX_VLANS, RateParams, Rule, RuleCidr, Span, T16_BYTE_AT_1BPS,
        T16_PER_SEC, frag_bits, rule_action, rule_fields, rule_flags,
    },
};

use crate::policy::rules::{FragMatch, Limits, RateSpec, RuleAction, RuleSpec};

/// Rules and their CIDRs; the CIDR spans in the rules are relative to `cidrs` until
/// [`CompiledRules::relocate`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledRules {
    pub rules: Vec<Rule>,
    pub cidrs: Vec<RuleCidr>,
}

impl CompiledRules {
    pub fn relocate(&mut self, cidr_base: u32) {
        for r in &mut self.rules {
            if r.src.len > 0 {
                r.src.start += cidr_base;
            }
            if r.dst.len > 0 {
                r.dst.start += cidr_base;
            }
        }
    }
}

/// GCRA parameters: packets cost `16e9 / pps` t16 each with a tolerance of `burst` packets
/// (default a tenth of a second's worth, at least one); bytes cost `n * 128e9 / bps` with a
/// tolerance of `burst_bytes` (default a tenth of a second's worth, at least one full frame).
pub fn rate_params(
    pps: Option<u64>,
    bps: Option<u64>,
    burst: Option<u64>,
    burst_bytes: Option<u64>,
) -> RateParams {
    let mut p = RateParams::default();
    if let Some(pps) = pps.filter(|v| *v > 0) {
        // Rounded to the nearest t16, never to zero: low rates keep their exact cost.
        p.pkt_cost = ((T16_PER_SEC + pps / 2) / pps).max(1);
        let burst = burst.unwrap_or((pps / 10).max(1)).max(1);
        p.pkt_tau = p.pkt_cost.saturating_mul(burst);
    }
    if let Some(bps) = bps.filter(|v| *v > 0) {
        p.bps = bps;
        let bytes = burst_bytes.unwrap_or((bps / 80).max(1514)).max(1);
        p.byte_tau =
            ((bytes as u128 * T16_BYTE_AT_1BPS as u128) / bps as u128).min(u64::MAX as u128) as u64;
    }
    p
}

pub fn rate_spec_params(r: &RateSpec) -> RateParams {
    rate_params(r.pps, r.bps, r.burst, r.burst_bytes)
}

pub fn limit_params(l: &Limits) -> RateParams {
    rate_params(l.pps, l.bps, None, None)
}

fn bitmap8(values: &[u8]) -> [u32; 8] {
    let mut m = [0u32; 8];
    for v in values {
        m[(*v >> 5) as usize] |= 1 << (v & 31);
    }
    m
}

fn cidr(n: &Net) -> RuleCidr {
    let words = |v: u128| {
        if n.v6 {
            [
                (v >> 96) as u32,
                (v >> 64) as u32,
                (v >> 32) as u32,
                v as u32,
            ]
        } else {
            [v as u32, 0, 0, 0]
        }
    };
    let mask = !Net::host_mask(n.v6, n.len) & Net::max_addr(n.v6);
    RuleCidr {
        v6: n.v6 as u32,
        len: n.len as u32,
        addr: words(n.addr),
        mask: words(mask),
    }
}

fn ports(list: &[(u16, u16)]) -> [u32; RULE_MAX_PORT_RANGES] {
    let mut out = [0u32; RULE_MAX_PORT_RANGES];
    for (i, (lo, hi)) in list.iter().take(RULE_MAX_PORT_RANGES).enumerate() {
        out[i] = *lo as u32 | ((*hi as u32) << 16);
    }
    out
}

/// Compiles `rules` (in evaluation order) with their stat/bucket indices.
/// Each comes with its expiry in `CLOCK_BOOTTIME` nanoseconds (0: never).
pub fn compile_rules(rules: &[(&RuleSpec, u32, u64)]) -> CompiledRules {
    let mut out = CompiledRules::default();
    for (spec, stat, expires_boot_ns) in rules {
        let mut r = Rule::EMPTY;
        r.id = spec.id;
        r.stat = *stat;
        r.expires_boot_ns = *expires_boot_ns;
        r.action = match &spec.action {
            RuleAction::Drop => rule_action::DROP,
            RuleAction::Pass => rule_action::PASS,
            RuleAction::Monitor => rule_action::MONITOR,
            RuleAction::RateLimit(rs) => {
                r.rate = rate_spec_params(rs);
                if rs.per_source {
                    r.flags |= rule_flags::PER_SOURCE;
                }
                rule_action::RATE_LIMIT
            }
        };
        if let Some(p) = &spec.protocol {
            r.fields |= rule_fields::PROTOCOL;
            r.protocol = bitmap8(p);
        }
        for (list, field, span) in [
            (&spec.sources, rule_fields::SOURCES, &mut r.src),
            (&spec.destinations, rule_fields::DESTINATIONS, &mut r.dst),
        ] {
            if let Some(nets) = list {
                r.fields |= field;
                *span = Span {
                    start: out.cidrs.len() as u32,
                    len: nets.len() as u32,
                };
                out.cidrs.extend(nets.iter().map(cidr));
            }
        }
        if let Some(p) = &spec.src_ports {
            r.fields |= rule_fields::SRC_PORTS;
            r.sport = ports(p);
            r.n_sport = p.len() as u32;
        }
        if let Some(p) = &spec.dst_ports {
            r.fields |= rule_fields::DST_PORTS;
            r.dport = ports(p);
            r.n_dport = p.len() as u32;
        }
        if let Some((set, unset)) = spec.tcp_flags {
            r.fields |= rule_fields::TCP_FLAGS;
            r.tcp_set = set as u32;
            r.tcp_unset = unset as u32;
        }
        if let Some(t) = &spec.icmp_type {
            r.fields |= rule_fields::ICMP_TYPE;
            r.icmp_type = bitmap8(t);
        }
        if let Some(c) = &spec.icmp_code {
            r.fields |= rule_fields::ICMP_CODE;
            r.icmp_code = bitmap8(c);
        }
        if let Some((lo, hi)) = spec.length {
            r.fields |= rule_fields::LENGTH;
            r.len_min = lo;
            r.len_max = hi;
        }
        if let Some((lo, hi)) = spec.ttl {
            r.fields |= rule_fields::TTL;
            r.ttl_min = lo as u32;
            r.ttl_max = hi as u32;
        }
        if let Some(d) = &spec.dscp {
            r.fields |= rule_fields::DSCP;
            for v in d {
                r.dscp[(*v >> 5) as usize] |= 1 << (v & 31);
            }
        }
        if let Some(f) = &spec.fragment {
            r.fields |= rule_fields::FRAGMENT;
            for x in f {
                r.fragment |= match x {
                    FragMatch::None => frag_bits::NONE,
                    FragMatch::First => frag_bits::FIRST,
                    FragMatch::Later => frag_bits::LATER,
                    FragMatch::Any => frag_bits::FIRST | frag_bits::LATER,
                };
            }
        }
        if let Some(v) = &spec.vlan {
            r.fields |= rule_fields::VLAN;
            for (i, id) in v.iter().take(RULE_MAX_VLANS).enumerate() {
                r.vlan[i] = *id as u32;
            }
            r.n_vlan = v.len().min(RULE_MAX_VLANS) as u32;
        }
        out.rules.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_never_round_to_zero_and_bursts_default_sensibly() {
        let p = rate_params(Some(1), None, None, None);
        assert_eq!(p.pkt_cost, 16_000_000_000);
        assert_eq!(p.pkt_tau, p.pkt_cost, "a burst of at least one packet");
        let p = rate_params(Some(10), None, Some(50), None);
        assert_eq!(p.pkt_tau, 50 * p.pkt_cost);
        let p = rate_params(Some(1_000_000_000), None, None, None);
        assert_eq!(p.pkt_cost, 16);
        let p = rate_params(None, Some(8_000), None, Some(1000));
        // 1000 bytes at 1000 bytes/s: one second.
        assert_eq!(p.byte_tau, T16_PER_SEC);
    }

    #[test]
    fn cidrs_carry_masks() {
        let c = cidr(&crate::policy::cidr::parse_cidr("198.18.66.0/23", false).unwrap());
        assert_eq!(c.addr, [0xc612_4200, 0, 0, 0]);
        assert_eq!(c.mask, [0xffff_fe00, 0, 0, 0]);
        let c = cidr(&crate::policy::cidr::parse_cidr("2001:db8:7::/48", false).unwrap());
        assert_eq!(c.addr, [0x2001_0db8, 0x0007_0000, 0, 0]);
        assert_eq!(c.mask, [u32::MAX, 0xffff_0000, 0, 0]);
    }
}
