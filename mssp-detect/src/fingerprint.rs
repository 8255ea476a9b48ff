//! The most specific match, in mssp's own rule syntax, that covers an attack's samples, and
//! how well it fits: its coverage of the attack and its collateral on the customer's
//! earlier traffic to the same destination.

use std::collections::HashMap;
use std::hash::Hash;

use mssp_common::proto::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use mssp_core::policy::cidr::format_addr;
use serde_json::{Value, json};

use crate::observed::{Observed, protocol_name};

/// A fingerprint is kept only if it still matches this share of the attack's samples.
pub const MIN_COVERAGE: f64 = 0.9;
/// A field joins the fingerprint when one value (or a narrow range) has this share.
pub const DOMINANT: f64 = 0.9;
/// Fewer earlier samples than this give no collateral estimate.
pub const MIN_BASELINE: usize = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Fingerprint {
    pub v6: bool,
    pub dst: u128,
    pub proto: Option<u8>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub length: Option<(u32, u32)>,
    pub ttl: Option<(u8, u8)>,
    /// TCP with SYN set and ACK clear.
    pub syn_only: bool,
    pub icmp_type: Option<u8>,
    /// Later fragments only.
    pub later_fragment: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    pub coverage: f64,
    pub collateral: Option<f64>,
    pub attack_samples: usize,
    pub baseline_samples: usize,
}

impl Fingerprint {
    /// Everything to the destination.
    pub fn destination(v6: bool, dst: u128) -> Fingerprint {
        Fingerprint {
            v6,
            dst,
            proto: None,
            sport: None,
            dport: None,
            length: None,
            ttl: None,
            syn_only: false,
            icmp_type: None,
            later_fragment: false,
        }
    }

    /// Whether the data path would match the packet (the same semantics as the rule this
    /// becomes: ports and flags need an L4 header, a later fragment has none).
    pub fn matches(&self, o: &Observed) -> bool {
        if o.v6 != self.v6 || o.dst != self.dst {
            return false;
        }
        if self.proto.is_some_and(|p| p != o.proto) {
            return false;
        }
        if let Some(p) = self.sport
            && o.sport != Some(p)
        {
            return false;
        }
        if let Some(p) = self.dport
            && o.dport != Some(p)
        {
            return false;
        }
        if let Some((lo, hi)) = self.length
            && (o.ip_len < lo || o.ip_len > hi)
        {
            return false;
        }
        if let Some((lo, hi)) = self.ttl
            && (o.ttl < lo || o.ttl > hi)
        {
            return false;
        }
        if self.syn_only && !o.is_syn() {
            return false;
        }
        if let Some(t) = self.icmp_type
            && (!o.is_icmp() || o.icmp_type != Some(t))
        {
            return false;
        }
        if self.later_fragment && o.frag != 2 {
            return false;
        }
        true
    }

    pub fn target(&self) -> String {
        format_addr(self.v6, self.dst)
    }

    /// The rule's `match` object.
    pub fn match_doc(&self) -> Value {
        let mut m = serde_json::Map::new();
        let bits = if self.v6 { 128 } else { 32 };
        m.insert(
            "destinations".into(),
            json!([format!("{}/{bits}", self.target())]),
        );
        if let Some(p) = self.proto {
            m.insert("protocol".into(), json!(protocol_name(p)));
        }
        if let Some(p) = self.sport {
            m.insert("src_ports".into(), json!([p.to_string()]));
        }
        if let Some(p) = self.dport {
            m.insert("dst_ports".into(), json!([p.to_string()]));
        }
        if self.syn_only {
            m.insert(
                "tcp_flags".into(),
                json!({"set": ["syn"], "unset": ["ack"]}),
            );
        }
        if let Some(t) = self.icmp_type {
            m.insert("icmp_type".into(), json!(t));
        }
        if let Some((lo, hi)) = self.length {
            m.insert("length".into(), json!({"min": lo, "max": hi}));
        }
        if let Some((lo, hi)) = self.ttl {
            m.insert("ttl".into(), json!({"min": lo, "max": hi}));
        }
        if self.later_fragment {
            m.insert("fragment".into(), json!("later"));
        }
        Value::Object(m)
    }

    pub fn fit(&self, attack: &[&Observed], baseline: &[&Observed]) -> Fit {
        let share = |set: &[&Observed]| {
            set.iter().filter(|o| self.matches(o)).count() as f64 / set.len().max(1) as f64
        };
        Fit {
            coverage: share(attack),
            collateral: (baseline.len() >= MIN_BASELINE).then(|| share(baseline)),
            attack_samples: attack.len(),
            baseline_samples: baseline.len(),
        }
    }
}

/// The most common value of `f` over the samples, and its share.
fn dominant<K: Eq + Hash + Copy>(
    samples: &[&Observed],
    f: impl Fn(&Observed) -> Option<K>,
) -> Option<(K, f64)> {
    let mut counts: HashMap<K, usize> = HashMap::new();
    for o in samples {
        if let Some(k) = f(o) {
            *counts.entry(k).or_default() += 1;
        }
    }
    let (k, n) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    Some((k, n as f64 / samples.len().max(1) as f64))
}

/// The range holding the middle 98% of `f`'s values, if narrower than `max_width`.
fn narrow_range<T: Ord + Copy + Into<u32>>(
    samples: &[&Observed],
    f: impl Fn(&Observed) -> T,
    max_width: u32,
) -> Option<(T, T)> {
    let mut v: Vec<T> = samples.iter().map(|o| f(o)).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let lo = v[v.len() / 100];
    let hi = v[v.len() - 1 - v.len() / 100];
    (hi.into() - lo.into() <= max_width).then_some((lo, hi))
}

/// Greedy: every field whose dominant value covers [`DOMINANT`] of the samples is added in
/// turn, as long as the whole still covers [`MIN_COVERAGE`]. `attack` are samples to the
/// target (v6, dst) since the attack began; `baseline` the customer's earlier ones to it.
pub fn fingerprint(
    v6: bool,
    dst: u128,
    attack: &[&Observed],
    baseline: &[&Observed],
) -> (Fingerprint, Fit) {
    let mut fp = Fingerprint::destination(v6, dst);
    let cover = |fp: &Fingerprint| {
        attack.iter().filter(|o| fp.matches(o)).count() as f64 / attack.len().max(1) as f64
    };
    let try_add = |fp: &mut Fingerprint, change: &dyn Fn(&mut Fingerprint)| {
        let mut t = fp.clone();
        change(&mut t);
        if cover(&t) >= MIN_COVERAGE {
            *fp = t;
        }
    };
    if let Some((p, s)) = dominant(attack, |o| Some(o.proto))
        && s >= DOMINANT
    {
        try_add(&mut fp, &|f| f.proto = Some(p));
    }
    let proto = fp.proto;
    if proto == Some(IPPROTO_TCP) {
        let syn = attack.iter().filter(|o| o.is_syn()).count() as f64 / attack.len().max(1) as f64;
        if syn >= DOMINANT {
            try_add(&mut fp, &|f| f.syn_only = true);
        }
    }
    if attack.iter().filter(|o| o.frag == 2).count() as f64 / attack.len().max(1) as f64 >= DOMINANT
    {
        try_add(&mut fp, &|f| f.later_fragment = true);
    }
    if fp
        .proto
        .is_some_and(|p| p == IPPROTO_TCP || p == IPPROTO_UDP)
        && !fp.later_fragment
    {
        if let Some((p, s)) = dominant(attack, |o| o.sport)
            && s >= DOMINANT
        {
            try_add(&mut fp, &|f| f.sport = Some(p));
        }
        if let Some((p, s)) = dominant(attack, |o| o.dport)
            && s >= DOMINANT
        {
            try_add(&mut fp, &|f| f.dport = Some(p));
        }
    }
    if fp
        .proto
        .is_some_and(|p| p == IPPROTO_ICMP || p == IPPROTO_ICMPV6)
        && let Some((t, s)) = dominant(attack, |o| if o.is_icmp() { o.icmp_type } else { None })
        && s >= DOMINANT
    {
        try_add(&mut fp, &|f| f.icmp_type = Some(t));
    }
    if let Some(r) = narrow_range(attack, |o| o.ip_len, 256) {
        try_add(&mut fp, &|f| f.length = Some(r));
    }
    if let Some(r) = narrow_range(attack, |o| o.ttl, 32) {
        try_add(&mut fp, &|f| f.ttl = Some(r));
    }
    let fit = fp.fit(attack, baseline);
    (fp, fit)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use mssp_common::{Reason, Verdict};

    pub(crate) fn udp(src: u128, sport: u16, dport: u16, len: u32) -> Observed {
        Observed {
            mono: 0.0,
            boot_ns: 0,
            customer: 7,
            verdict: Verdict::Pass,
            reason: Reason::Default,
            entry: 0,
            rule: 0,
            every: 1,
            frame_len: len + 14,
            parsed: true,
            v6: false,
            src,
            dst: 0xc613_0709,
            proto: IPPROTO_UDP,
            frag: 0,
            ip_len: len,
            ttl: 64,
            sport: Some(sport),
            dport: Some(dport),
            tcp_flags: None,
            icmp_type: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::udp;
    use super::*;

    #[test]
    fn an_ntp_reflection_is_told_from_the_customers_own_udp() {
        let attack: Vec<Observed> = (0..500)
            .map(|i| udp(0xc612_0000 + i, 123, 40_000 + (i as u16 % 300), 468))
            .collect();
        let baseline: Vec<Observed> = (0..200)
            .map(|i| udp(0xc612_0100 + (i % 5), 5353, 9000, 100 + i as u32))
            .collect();
        let a: Vec<&Observed> = attack.iter().collect();
        let b: Vec<&Observed> = baseline.iter().collect();
        let (fp, fit) = fingerprint(false, 0xc613_0709, &a, &b);
        assert_eq!(fp.proto, Some(IPPROTO_UDP));
        assert_eq!(fp.sport, Some(123));
        assert_eq!(fp.dport, None, "destination ports vary");
        assert_eq!(fp.length, Some((468, 468)));
        assert_eq!(fit.coverage, 1.0);
        assert_eq!(fit.collateral, Some(0.0));
        assert_eq!(
            fp.match_doc(),
            json!({"destinations": ["198.19.7.9/32"], "protocol": "udp", "src_ports": ["123"],
                   "length": {"min": 468, "max": 468}, "ttl": {"min": 64, "max": 64}})
        );
    }

    #[test]
    fn a_mixed_attack_keeps_only_what_covers_it() {
        // Half the attack from port 53, half from 123: no source port in the fingerprint.
        let attack: Vec<Observed> = (0..400)
            .map(|i| udp(0xc612_0000 + i, if i % 2 == 0 { 53 } else { 123 }, 80, 200))
            .collect();
        let a: Vec<&Observed> = attack.iter().collect();
        let (fp, fit) = fingerprint(false, 0xc613_0709, &a, &[]);
        assert_eq!(fp.sport, None);
        assert_eq!(fp.dport, Some(80));
        assert!(fit.coverage >= MIN_COVERAGE);
        assert_eq!(fit.collateral, None, "no baseline, no estimate");
    }
}
