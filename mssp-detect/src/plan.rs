//! What to install against an attack: its few stable sources blocked; else its fingerprint
//! dropped when that spares the customer's other traffic; else the fingerprint rate-limited
//! to the threshold. Infrastructure and allowlisted sources are never blocked, and the caps
//! on auto rules and entries hold.

use std::collections::{HashMap, HashSet};

use mssp_core::policy::{
    cidr::format_addr,
    detection::{Detection, Metric},
};
use mssp_wire::attacks::TopSource;
use serde_json::{Value, json};

use crate::{
    fingerprint::{Fingerprint, Fit, fingerprint},
    observed::Observed,
};

/// Sources that carry this share of an attack's samples are "its sources".
pub const SOURCE_SHARE: f64 = 0.95;
/// Each source must have been sampled about this many times (a spoofed flood's sources are
/// almost all sampled once).
pub const SAMPLES_PER_SOURCE: usize = 8;
/// The most sources an attack is mitigated by blocking.
pub const MAX_BLOCKED_SOURCES: usize = 64;
/// The fingerprint is dropped outright when it would also match at most this share of the
/// customer's earlier traffic to the target.
pub const MAX_COLLATERAL: f64 = 0.05;

/// What the caps still allow for this customer (per customer and in total, whichever is
/// smaller).
#[derive(Clone, Copy, Debug)]
pub struct Room {
    pub rules: usize,
    pub sources: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Planned {
    /// Drop this source (a customer entry of the auto layer).
    Source { v6: bool, addr: u128 },
    /// A customer rule of the auto layer: its `match` and `action`, in the policy syntax.
    Rule { matches: Value, action: Value },
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub items: Vec<Planned>,
    pub decision: String,
    pub fingerprint: Fingerprint,
    pub fit: Fit,
}

/// The attack's sources when they are few and stable: together [`SOURCE_SHARE`] of the
/// samples, each seen often, and in both halves of the samples (in time order).
pub fn stable_sources(attack: &[&Observed], limit: usize) -> Option<Vec<(bool, u128)>> {
    let n = attack.len();
    if n < 40 {
        return None;
    }
    let mut counts: HashMap<(bool, u128), usize> = HashMap::new();
    for o in attack {
        *counts.entry((o.v6, o.src)).or_default() += 1;
    }
    let mut by_count: Vec<((bool, u128), usize)> = counts.into_iter().collect();
    by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut covered = 0;
    let mut top = Vec::new();
    for (src, c) in by_count {
        if covered as f64 >= SOURCE_SHARE * n as f64 {
            break;
        }
        covered += c;
        top.push(src);
        if top.len() > limit {
            return None;
        }
    }
    if n < SAMPLES_PER_SOURCE * top.len() {
        return None;
    }
    let half = n / 2;
    let first: HashSet<(bool, u128)> = attack[..half].iter().map(|o| (o.v6, o.src)).collect();
    let second: HashSet<(bool, u128)> = attack[half..].iter().map(|o| (o.v6, o.src)).collect();
    top.iter()
        .all(|s| first.contains(s) && second.contains(s))
        .then_some(top)
}

/// The rate limit at the threshold that fired (packets if any packet threshold did).
fn limit_action(triggered: &[(Metric, u64)]) -> Value {
    match triggered
        .iter()
        .filter(|(m, _)| !m.is_bits())
        .map(|(_, v)| *v)
        .min()
    {
        Some(pps) => json!({"rate_limit": {"pps": pps}}),
        None => {
            let bps = triggered.iter().map(|(_, v)| *v).min().unwrap_or(1_000_000);
            json!({"rate_limit": {"bps": bps}})
        }
    }
}

pub fn plan(
    v6: bool,
    dst: u128,
    attack: &[&Observed],
    baseline: &[&Observed],
    triggered: &[(Metric, u64)],
    detection: &Detection,
    protected: &dyn Fn(bool, u128) -> bool,
    room: Room,
) -> Plan {
    let (fp, fit) = fingerprint(v6, dst, attack, baseline);
    let mut prefix = String::new();
    // "Few" is a property of the attack; whether they fit is the caps' business (below).
    if let Some(srcs) = stable_sources(attack, MAX_BLOCKED_SOURCES) {
        let (spared, blockable): (Vec<_>, Vec<_>) =
            srcs.iter().partition(|(v6, a)| protected(*v6, *a));
        if blockable.is_empty() {
            return Plan {
                items: Vec::new(),
                decision: format!(
                    "its {} sources are infrastructure or allowlisted: they always pass; nothing installed",
                    spared.len()
                ),
                fingerprint: fp,
                fit,
            };
        }
        if blockable.len() <= room.sources {
            let mut decision = format!("{} stable sources: blocked", blockable.len());
            if !spared.is_empty() {
                decision.push_str(&format!(
                    " ({} infrastructure or allowlisted sources left alone)",
                    spared.len()
                ));
            }
            return Plan {
                items: blockable
                    .iter()
                    .map(|(v6, addr)| Planned::Source {
                        v6: *v6,
                        addr: *addr,
                    })
                    .collect(),
                decision,
                fingerprint: fp,
                fit,
            };
        }
        prefix = format!(
            "{} stable sources, but the cap leaves room for {} source entries; ",
            blockable.len(),
            room.sources
        );
    }
    if room.rules == 0 {
        return Plan {
            items: Vec::new(),
            decision: format!(
                "{prefix}cap reached: no room for another auto rule (max_rules {} per customer, or the agent's total); not mitigated",
                detection.max_rules
            ),
            fingerprint: fp,
            fit,
        };
    }
    // Something beyond the destination and the protocol, or a protocol shown not to be the
    // customer's own traffic: dropping it spares the rest.
    let beyond_protocol = fp.sport.is_some()
        || fp.dport.is_some()
        || fp.length.is_some()
        || fp.syn_only
        || fp.icmp_type.is_some()
        || fp.later_fragment;
    let specific = fp.proto.is_some()
        && match fit.collateral {
            Some(c) => c <= MAX_COLLATERAL,
            None => beyond_protocol,
        };
    let pct = |c: Option<f64>| c.map_or("unknown".to_string(), |c| format!("{:.1}%", 100.0 * c));
    let (action, decision) = if specific {
        (
            json!("drop"),
            format!(
                "{prefix}fingerprint dropped (coverage {:.1}%, collateral {})",
                100.0 * fit.coverage,
                pct(fit.collateral)
            ),
        )
    } else {
        (
            limit_action(triggered),
            format!(
                "{prefix}rate limit at the threshold: the fingerprint is not specific enough to drop (coverage {:.1}%, collateral {})",
                100.0 * fit.coverage,
                pct(fit.collateral)
            ),
        )
    };
    Plan {
        items: vec![Planned::Rule {
            matches: fp.match_doc(),
            action,
        }],
        decision,
        fingerprint: fp,
        fit,
    }
}

/// The attack's heaviest sources, with rates estimated from the samples over `secs`.
pub fn top_sources(attack: &[&Observed], secs: f64, n: usize) -> Vec<TopSource> {
    let mut counts: HashMap<(bool, u128), (usize, u64)> = HashMap::new();
    for o in attack {
        let e = counts.entry((o.v6, o.src)).or_default();
        e.0 += 1;
        e.1 += o.every as u64;
    }
    let total = attack.len().max(1) as f64;
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(n)
        .map(|((v6, a), (c, weighted))| TopSource {
            source: format_addr(v6, a),
            pps: weighted as f64 / secs.max(0.25),
            share: c as f64 / total,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::tests_support::udp;
    use mssp_core::policy::detection::{DetectMode, Detection};

    fn detection() -> Detection {
        Detection {
            mode: DetectMode::Mitigate,
            thresholds: vec![(Metric::Pps, 1000)],
            ..Detection::OFF
        }
    }

    const ROOM: Room = Room {
        rules: 4,
        sources: 64,
    };

    #[test]
    fn four_stable_sources_are_blocked_and_an_allowlisted_one_is_spared() {
        let attack: Vec<Observed> = (0..400)
            .map(|i| udp(0xc612_0a00 + (i % 5), 4444, 80, 100))
            .collect();
        let a: Vec<&Observed> = attack.iter().collect();
        let allow = |_: bool, addr: u128| addr == 0xc612_0a04;
        let p = plan(
            false,
            0xc613_0709,
            &a,
            &[],
            &[(Metric::Pps, 1000)],
            &detection(),
            &allow,
            ROOM,
        );
        assert_eq!(p.items.len(), 4, "{p:?}");
        assert!(p.items.iter().all(|i| !matches!(
            i,
            Planned::Source {
                addr: 0xc612_0a04,
                ..
            }
        )));
        assert!(
            p.decision.contains("1 infrastructure or allowlisted"),
            "{}",
            p.decision
        );
    }

    #[test]
    fn a_spoofed_flood_gets_its_fingerprint_and_at_the_cap_nothing() {
        let attack: Vec<Observed> = (0..400)
            .map(|i| udp(0xc612_0000 + i * 7, 123, 80, 468))
            .collect();
        let a: Vec<&Observed> = attack.iter().collect();
        let none = |_: bool, _: u128| false;
        let p = plan(
            false,
            0xc613_0709,
            &a,
            &[],
            &[(Metric::Pps, 1000)],
            &detection(),
            &none,
            ROOM,
        );
        let [Planned::Rule { action, .. }] = &p.items[..] else {
            panic!("{p:?}")
        };
        assert_eq!(action, &json!("drop"));
        let p = plan(
            false,
            0xc613_0709,
            &a,
            &[],
            &[(Metric::Pps, 1000)],
            &detection(),
            &none,
            Room {
                rules: 0,
                sources: 64,
            },
        );
        assert!(
            p.items.is_empty() && p.decision.contains("cap reached"),
            "{p:?}"
        );
    }

    #[test]
    fn a_fingerprint_that_would_hit_the_customers_traffic_is_rate_limited() {
        let attack: Vec<Observed> = (0..400)
            .map(|i| {
                udp(
                    0xc612_0000 + i * 7,
                    40000 + i as u16,
                    53,
                    80 + (i as u32 % 900),
                )
            })
            .collect();
        let baseline: Vec<Observed> = (0..100)
            .map(|i| udp(0xc612_9900 + i, 40000 + i as u16, 53, 90))
            .collect();
        let a: Vec<&Observed> = attack.iter().collect();
        let b: Vec<&Observed> = baseline.iter().collect();
        let none = |_: bool, _: u128| false;
        let p = plan(
            false,
            0xc613_0709,
            &a,
            &b,
            &[(Metric::UdpPps, 2000)],
            &detection(),
            &none,
            ROOM,
        );
        let [Planned::Rule { action, .. }] = &p.items[..] else {
            panic!("{p:?}")
        };
        assert_eq!(
            action,
            &json!({"rate_limit": {"pps": 2000}}),
            "{}",
            p.decision
        );
    }

    #[test]
    fn too_many_sources_for_the_cap_fall_back_to_a_rule() {
        let attack: Vec<Observed> = (0..400)
            .map(|i| udp(0xc612_0a00 + (i % 5), 4444, 80, 100))
            .collect();
        let a: Vec<&Observed> = attack.iter().collect();
        let none = |_: bool, _: u128| false;
        let p = plan(
            false,
            0xc613_0709,
            &a,
            &[],
            &[(Metric::Pps, 1000)],
            &detection(),
            &none,
            Room {
                rules: 1,
                sources: 2,
            },
        );
        assert!(matches!(&p.items[..], [Planned::Rule { .. }]), "{p:?}");
        assert!(
            p.decision.starts_with("5 stable sources, but the cap"),
            "{}",
            p.decision
        );
    }
}
