//! What the NOC's live views print: a sampled packet with its decision named (`mssp
//! monitor`), and the rates per customer, destination and source (`mssp top`).

use std::collections::HashMap;

use mssp_common::{Layer, Verdict};
use mssp_core::{
    dataplane::backend::MapBackend,
    policy::{
        cidr::{format_addr, format_net},
        rules::{AUTO_RULE_IDS, FLEET_RULE_IDS},
    },
};
use mssp_detect::{
    Observed,
    observed::{protocol_name, tcp_flag_names},
};
use mssp_wire::attacks::{SampledPacket, TopCustomer, TopSource, TopTarget, TopView};
use serde_json::json;
use time::OffsetDateTime;

use crate::{
    ips::{IpsInner, TOP_WINDOW_SECS, mono},
    state::AgentState,
};

/// The layer a rule id of `customer` belongs to.
fn rule_layer<B: MapBackend>(state: &AgentState<B>, customer: u32, id: u32) -> Layer {
    if id >= AUTO_RULE_IDS {
        Layer::Auto
    } else if id >= FLEET_RULE_IDS {
        Layer::Fleet
    } else if state
        .local
        .rules
        .iter()
        .any(|r| r.customer == customer && r.rule.id == id)
    {
        Layer::Local
    } else {
        Layer::Central
    }
}

pub fn sampled<B: MapBackend>(state: &AgentState<B>, o: &Observed) -> SampledPacket {
    let name = state
        .policy
        .customer(o.customer)
        .and_then(|c| c.name.clone());
    let entry = (o.entry != 0)
        .then(|| state.dp.entry_key(o.entry))
        .flatten()
        .map(|k| json!({"scope": k.scope.label().to_string(), "layer": k.layer.name(), "prefix": format_net(&k.net)}));
    let rule = (o.rule != 0)
        .then(|| json!({"layer": rule_layer(state, o.customer, o.rule).name(), "id": o.rule}));
    let age = (mono() - o.mono).max(0.0);
    SampledPacket {
        at: OffsetDateTime::now_utc() - time::Duration::seconds_f64(age),
        verdict: o.verdict.name().into(),
        reason: o.reason.name().into(),
        customer: (o.customer != 0).then_some(o.customer),
        customer_name: name,
        entry,
        rule,
        src: if o.parsed {
            format_addr(o.v6, o.src)
        } else {
            "?".into()
        },
        dst: if o.parsed {
            format_addr(o.v6, o.dst)
        } else {
            "?".into()
        },
        protocol: if o.parsed {
            protocol_name(o.proto)
        } else {
            "?".into()
        },
        sport: o.sport,
        dport: o.dport,
        tcp_flags: o.tcp_flags.map(tcp_flag_names),
        length: o.frame_len,
        sampling: o.every,
    }
}

/// Rates per customer and source estimated from the last seconds of samples (each stands
/// for `every` packets); per destination from the meters (exact) where detection is on.
pub fn top(ips: &IpsInner, only: Option<u32>, names: &HashMap<u32, String>) -> TopView {
    let now = mono();
    let span = ips.recent.front().map_or(TOP_WINDOW_SECS, |o| {
        (now - o.mono).clamp(0.25, TOP_WINDOW_SECS)
    });
    let mut customers: HashMap<u32, (f64, f64, f64)> = HashMap::new();
    let mut sources: HashMap<(bool, u128), (f64, u64)> = HashMap::new();
    let mut n = 0u64;
    for o in ips
        .recent
        .iter()
        .filter(|o| o.customer != 0 && only.is_none_or(|c| c == o.customer))
    {
        let w = o.every as f64;
        let e = customers.entry(o.customer).or_default();
        e.0 += w;
        e.1 += w * 8.0 * o.frame_len as f64;
        if o.verdict == Verdict::Drop {
            e.2 += w;
        }
        if o.parsed {
            let s = sources.entry((o.v6, o.src)).or_default();
            s.0 += w;
            s.1 += 1;
        }
        n += 1;
    }
    let mut cv: Vec<TopCustomer> = customers
        .into_iter()
        .map(|(c, (p, b, d))| TopCustomer {
            customer: c,
            name: names.get(&c).cloned(),
            pps: p / span,
            bps: b / span,
            dropped_pps: d / span,
        })
        .collect();
    cv.sort_by(|a, b| b.pps.total_cmp(&a.pps));
    let mut sv: Vec<TopSource> = sources
        .into_iter()
        .map(|((v6, a), (w, c))| TopSource {
            source: format_addr(v6, a),
            pps: w / span,
            share: c as f64 / n.max(1) as f64,
        })
        .collect();
    sv.sort_by(|a, b| b.pps.total_cmp(&a.pps));
    sv.truncate(20);
    let mut tv: Vec<TopTarget> = ips
        .engine
        .target_rates()
        .into_iter()
        .filter(|(t, _, _)| only.is_none_or(|c| c == t.customer))
        .map(|(t, r, attack)| TopTarget {
            customer: t.customer,
            target: format_addr(t.v6, t.addr),
            pps: r.pps[0],
            bps: r.bps[0],
            udp_pps: r.pps[1],
            syn_pps: r.pps[2],
            icmp_pps: r.pps[3],
            frag_pps: r.pps[4],
            attack,
        })
        .collect();
    tv.sort_by(|a, b| b.pps.total_cmp(&a.pps));
    tv.truncate(50);
    TopView {
        window_seconds: span,
        customers: cv,
        targets: tv,
        sources: sv,
    }
}
