//! The agent's state as the wire types the local API and push API answer with (and the CLI
//! prints). Everything here reads; nothing changes state.

use std::collections::HashMap;

use mssp_common::{Layer, Net, Scope, abi::ABI_VERSION};
use mssp_core::{
    dataplane::{
        DesiredEntry, EntryKey, StatKey, StatKind,
        backend::{MapBackend, MapOpError},
    },
    policy::cidr::format_net,
};
use mssp_wire::views::{
    ApplyView, BlockView, CounterView, CustomerStats, FillView, InterfaceView, LayerSummary,
    LayerVersion, PolicyVersion, RuleView, StatsView, StatusView,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{Agent, metrics, state::AgentState, store::LocalEntry};

pub fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn status_view<B: MapBackend>(agent: &Agent<B>, state: &AgentState<B>) -> StatusView {
    let cfg = agent.config();
    // Read from the kernel now, not from memory.
    let drift = state.drift(&cfg.pin_dir);
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started: ts(agent.started),
        uptime_seconds: (OffsetDateTime::now_utc() - agent.started)
            .whole_seconds()
            .max(0) as u64,
        pin_dir: cfg.pin_dir.display().to_string(),
        abi: ABI_VERSION,
        interfaces: state
            .attached
            .iter()
            .map(|a| InterfaceView {
                name: a.name.clone(),
                ifindex: a.ifindex,
                mode: a.mode.clone(),
                link_id: a.link_id,
                prog_id: a.prog_id,
                adopted: a.adopted,
            })
            .collect(),
        missing_interfaces: state.missing.clone(),
        enforced: drift.is_empty(),
        drift,
        central: LayerVersion {
            version: state.central_version(),
            digest: state.central.as_ref().map(|c| c.digest.clone()),
            applied_at: state.central.as_ref().map(|c| ts(c.applied_at)),
        },
        local_entries: state.local.entries.len(),
        customers: state.dp.customers().len(),
        last_apply: state.last_apply.as_ref().map(|l| ApplyView {
            at: ts(l.at),
            duration_ms: l.duration.as_secs_f64() * 1000.0,
            trigger: l.trigger.clone(),
            customers_changed: l.stats.customers_changed,
            customers_removed: l.stats.customers_removed,
            root_changed: l.stats.root_changed,
        }),
        last_error: state.last_error.clone(),
        maps: state
            .dp
            .fill()
            .iter()
            .map(|f| FillView {
                map: f.name.into(),
                used: f.used,
                capacity: f.capacity,
            })
            .collect(),
        fleet: cfg.fleet.as_ref().map(|f| {
            use std::sync::atomic::Ordering::Relaxed;
            let st = &agent.fleet_stats;
            mssp_wire::views::FleetClientView {
                edge: f.edge.clone(),
                nats_url: f.nats_url.clone(),
                connected: st.connected.load(Relaxed),
                fleet_version: st.fleet_version.load(Relaxed),
                decisions: state.fleet.len(),
                applied: st.applied.load(Relaxed),
                apply_failed: st.apply_failed.load(Relaxed),
                bad_signature: st.bad_signature.load(Relaxed),
            }
        }),
        filtering: (!cfg.customer_interfaces.is_empty()).then(|| {
            let st = agent.filtering.status();
            let report =
                crate::filtering::read_report(&state.store.dir).filter(|r| st.pid == Some(r.pid));
            let (inspected, blocked, allowed) = report.as_ref().map_or((0, 0, 0), |r| {
                (r.totals.inspected, r.totals.blocked(), r.totals.allowed)
            });
            mssp_wire::views::FilteringStatusView {
                interfaces: cfg
                    .customer_interfaces()
                    .into_iter()
                    .map(|i| i.name)
                    .collect(),
                inspector_running: st.running,
                inspector_pid: st.pid,
                restarts: st.restarts,
                last_exit: st.last_exit.clone(),
                fail_open: st.fail_open,
                heartbeat_age_ms: st.heartbeat_age_ms,
                sockets: report
                    .as_ref()
                    .map(|r| {
                        r.sockets
                            .iter()
                            .map(|s| (s.interface.clone(), s.queue, s.mode.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                inject_device: report.as_ref().map(|r| r.inject_device.clone()),
                inspected,
                blocked,
                allowed,
            }
        }),
    }
}

/// Counters of every customer (or of one, already known to have a slot), from one bulk
/// read for many customers or a few small ones for one.
pub fn stats_view<B: MapBackend>(
    state: &AgentState<B>,
    only: Option<u32>,
) -> Result<StatsView, MapOpError> {
    let mut rows: Vec<(Option<u32>, u32)> = vec![(None, 0)];
    rows.extend(state.dp.customers().into_iter().map(|(c, s)| (Some(c), s)));
    if let Some(c) = only {
        rows.retain(|(id, _)| *id == Some(c));
    }
    let table = if rows.len() > 1 {
        Some(state.dp.backend().read_counter_table()?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(rows.len());
    for (customer, slot) in rows {
        let vals = match &table {
            Some(t) => t.of(slot),
            None => state.dp.backend().read_slot_counters(slot)?,
        };
        let (passed, dropped) = vals.totals();
        out.push(CustomerStats {
            customer,
            name: customer
                .and_then(|c| state.policy.customer(c))
                .and_then(|c| c.name.clone()),
            counters: vals
                .nonzero()
                .map(|(k, c)| CounterView {
                    verdict: k.verdict_name().into(),
                    reason: k.reason_name().into(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect(),
            passed_packets: passed,
            dropped_packets: dropped,
        });
    }
    Ok(StatsView { customers: out })
}

/// The layers in force; with `full`, their documents too (an error if the central one
/// cannot be read back from the state directory).
pub fn policy_view<B: MapBackend>(
    state: &AgentState<B>,
    full: bool,
) -> Result<PolicyVersion, String> {
    let mut v = central_view(state, full)?;
    v.layers = vec![LayerSummary {
        layer: Layer::Local.name().into(),
        version: state.local.version,
        entries: state.local.entries.len(),
        rules: state.local.rules.len(),
        content: full.then(|| serde_json::to_value(&state.local).unwrap_or_default()),
    }];
    Ok(v)
}

/// The central layer alone (what the push API answers).
/// With `full`, the document is read back from the state directory when memory holds it
/// slim: if that fails, the error says so (never an empty document passed off as it).
pub fn central_view<B: MapBackend>(
    state: &AgentState<B>,
    full: bool,
) -> Result<PolicyVersion, String> {
    Ok(match &state.central {
        Some(c) => PolicyVersion {
            version: c.version,
            digest: Some(c.digest.clone()),
            applied_at: Some(ts(c.applied_at)),
            source: c.source.clone(),
            policy: match full {
                true => Some(
                    state
                        .central_doc()
                        .map(|doc| serde_json::to_value(&doc).unwrap_or_default())
                        .map_err(|e| {
                            format!("the central document in force cannot be read back: {e}")
                        })?,
                ),
                false => None,
            },
            layers: Vec::new(),
        },
        None => PolicyVersion {
            version: 0,
            digest: None,
            applied_at: None,
            source: None,
            policy: None,
            layers: Vec::new(),
        },
    })
}

/// One list: its scope, its entries of every layer, and the central entries' comments.
type ListView<'a> = (Scope, &'a [DesiredEntry], HashMap<Net, Option<&'a String>>);

/// Who wrote an entry, when, and with what comment.
struct Origin {
    who: String,
    added: String,
    comment: Option<String>,
}

/// Every source entry of both layers (of one list, with `filter`), with provenance, whether
/// the data path enforces it, and its hits. Linear in the number of entries: one hash lookup
/// per entry and one bulk read of the hit counters.
pub fn blocks_view<B: MapBackend>(state: &AgentState<B>, filter: Option<Scope>) -> Vec<BlockView> {
    let now = OffsetDateTime::now_utc();
    let d = state.desired();
    let central = Origin {
        who: format!("controller (policy version {})", state.central_version()),
        added: state
            .central
            .as_ref()
            .map(|c| ts(c.applied_at))
            .unwrap_or_default(),
        comment: None,
    };
    let local: HashMap<(Scope, Net), &LocalEntry> = state
        .local
        .entries
        .iter()
        .map(|l| ((l.scope, l.net()), l))
        .collect();
    let mut lists: Vec<ListView> = Vec::new();
    if filter.is_none_or(|f| f == Scope::Global) {
        let comments = state
            .policy
            .global
            .iter()
            .map(|s| (s.net, s.comment.as_ref()))
            .collect();
        lists.push((Scope::Global, &d.global, comments));
    }
    for c in &d.customers {
        let scope = Scope::Customer(c.id);
        if filter.is_some_and(|f| f != scope) {
            continue;
        }
        let comments = state
            .policy
            .customer(c.id)
            .map(|p| {
                p.sources
                    .iter()
                    .map(|s| (s.net, s.comment.as_ref()))
                    .collect()
            })
            .unwrap_or_default();
        lists.push((scope, &c.entries, comments));
    }
    // Enforced means: the publisher gave the entry a hit counter (only entries in force get
    // one) and it has not expired since.
    let mut rows: Vec<(BlockView, Option<u32>)> = Vec::new();
    for (scope, entries, comments) in &lists {
        for e in entries.iter() {
            let key = EntryKey {
                scope: *scope,
                layer: e.layer,
                net: e.net,
            };
            let id = state.dp.entry_id(&key);
            let enforced = id.is_some() && e.in_effect(now);
            let note = if enforced {
                None
            } else if !e.in_effect(now) {
                Some("expired".to_string())
            } else {
                Some("overridden by the local entry for the same prefix".to_string())
            };
            let origin = match e.layer {
                Layer::Local => local.get(&(*scope, e.net)).map_or(
                    Origin {
                        who: String::new(),
                        added: String::new(),
                        comment: None,
                    },
                    |l| Origin {
                        who: l.by.who.clone(),
                        added: ts(l.by.at),
                        comment: l.comment.clone(),
                    },
                ),
                Layer::Auto => {
                    let item = state.auto.iter().find(|a| {
                        Scope::Customer(a.customer) == *scope
                            && matches!(&a.kind, mssp_detect::engine::AutoKind::Source { prefix }
                                if prefix == &format_net(&e.net))
                    });
                    Origin {
                        who: item.map_or("mssp detector".into(), |a| {
                            format!("mssp detector (attack {})", a.attack)
                        }),
                        added: item.map(|a| ts(a.since)).unwrap_or_default(),
                        comment: item.map(|a| format!("auto: attack {}", a.attack)),
                    }
                }
                Layer::Fleet => {
                    let f = state.fleet.iter().find(|f| {
                        f.customer.map_or(Scope::Global, Scope::Customer) == *scope
                            && matches!(&f.item, mssp_wire::fleet::DecisionItem::Source { prefix, .. }
                                if mssp_core::policy::cidr::parse_cidr(prefix, true).is_ok_and(|n| n == e.net))
                    });
                    Origin {
                        who: f.map_or("fleet controller".into(), |f| {
                            format!(
                                "fleet controller (decision {} v{}: {})",
                                f.id, f.version, f.reason
                            )
                        }),
                        added: f.map(|f| ts(f.created)).unwrap_or_default(),
                        comment: f.and_then(|f| f.comment.clone()),
                    }
                }
                _ => Origin {
                    who: central.who.clone(),
                    added: central.added.clone(),
                    comment: comments.get(&e.net).copied().flatten().cloned(),
                },
            };
            rows.push((
                BlockView {
                    scope: scope.label().to_string(),
                    prefix: format_net(&e.net),
                    action: e.action.name().into(),
                    layer: e.layer.name().into(),
                    enforced,
                    note,
                    expires: e.expires.map(ts),
                    comment: origin.comment,
                    who: origin.who,
                    added: origin.added,
                    hits_packets: 0,
                    hits_bytes: 0,
                },
                id,
            ));
        }
    }
    fill_hits(state, &mut rows);
    let mut out: Vec<BlockView> = rows.into_iter().map(|(v, _)| v).collect();
    // Local entries whose customer the central policy lacks.
    for l in &state.local.entries {
        if let Scope::Customer(c) = l.scope
            && state.policy.customer(c).is_none()
            && filter.is_none_or(|f| f == l.scope)
        {
            out.push(BlockView {
                scope: l.scope.label().to_string(),
                prefix: l.prefix.clone(),
                action: l.action.name().into(),
                layer: Layer::Local.name().into(),
                enforced: false,
                note: Some(format!("customer {c} is not in the central policy")),
                expires: l.expires.map(ts),
                comment: l.comment.clone(),
                who: l.by.who.clone(),
                added: ts(l.by.at),
                hits_packets: 0,
                hits_bytes: 0,
            });
        }
    }
    out
}

/// The view of one local entry (what `block add` answers), without listing the others.
pub fn local_entry_view<B: MapBackend>(state: &AgentState<B>, l: &LocalEntry) -> BlockView {
    let now = OffsetDateTime::now_utc();
    let key = EntryKey {
        scope: l.scope,
        layer: Layer::Local,
        net: l.net(),
    };
    let id = state.dp.entry_id(&key);
    let in_effect = l.expires.is_none_or(|t| now < t);
    let hits = id
        .and_then(|id| state.dp.backend().read_entry_hits(id).ok())
        .unwrap_or_default();
    let known = match l.scope {
        Scope::Global => true,
        Scope::Customer(c) => state.policy.customer(c).is_some(),
    };
    BlockView {
        scope: l.scope.label().to_string(),
        prefix: l.prefix.clone(),
        action: l.action.name().into(),
        layer: Layer::Local.name().into(),
        enforced: id.is_some() && in_effect,
        note: if !known {
            Some(format!("{} is not in the central policy", l.scope.label()))
        } else if !in_effect {
            Some("expired".into())
        } else if id.is_none() {
            Some("not published".into())
        } else {
            None
        },
        expires: l.expires.map(ts),
        comment: l.comment.clone(),
        who: l.by.who.clone(),
        added: ts(l.by.at),
        hits_packets: hits.packets,
        hits_bytes: hits.bytes,
    }
}

/// Hits of the rows that have a counter, in one bulk read over their id range (a failed
/// read leaves them at 0).
fn fill_hits<B: MapBackend>(state: &AgentState<B>, rows: &mut [(BlockView, Option<u32>)]) {
    let ids = rows.iter().filter_map(|(_, id)| *id);
    let (Some(lo), Some(hi)) = (ids.clone().min(), ids.max()) else {
        return;
    };
    let Ok(vals) = state.dp.backend().read_counters_bulk(true, lo, hi - lo + 1) else {
        return;
    };
    for (v, id) in rows.iter_mut() {
        if let Some(c) = id.and_then(|id| vals.get((id - lo) as usize)) {
            v.hits_packets = c.packets;
            v.hits_bytes = c.bytes;
        }
    }
}

/// A customer's rules of both layers in evaluation order, with their counters.
pub fn rules_view<B: MapBackend>(state: &AgentState<B>, customer: u32) -> Vec<RuleView> {
    let d = state.desired();
    let Some(c) = d.customers.iter().find(|c| c.id == customer) else {
        return Vec::new();
    };
    let order: Vec<(Layer, u32)> = c
        .effective_rules()
        .iter()
        .map(|r| (r.layer, r.spec.id))
        .collect();
    let counters = |layer: Layer, id: u32| {
        state
            .dp
            .stat_id(&StatKey {
                customer,
                kind: StatKind::Rule { layer, id },
            })
            .and_then(|s| state.dp.backend().read_rule_stats(s, 1).ok())
            .map(|v| v[0])
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut push = |layer: Layer,
                    id: u32,
                    doc: serde_json::Value,
                    who: String,
                    added: String,
                    expires: Option<String>| {
        let pos = order.iter().position(|o| *o == (layer, id));
        let k = counters(layer, id);
        out.push(RuleView {
            customer,
            id,
            layer: layer.name().into(),
            order: pos.map(|p| p + 1),
            enforced: pos.is_some(),
            note: pos.is_none().then(|| match layer {
                Layer::Local => "no longer valid for the customer's prefixes".to_string(),
                _ => "replaced by the local rule with the same id".to_string(),
            }),
            rule: doc,
            who,
            added,
            packets: k.packets,
            bytes: k.bytes,
            limited_packets: k.limited_packets,
            expires,
        });
    };
    for r in state.local.rules.iter().filter(|r| r.customer == customer) {
        push(
            Layer::Local,
            r.rule.id,
            serde_json::to_value(&r.rule).unwrap_or_default(),
            r.by.who.clone(),
            ts(r.by.at),
            None,
        );
    }
    let now = time::OffsetDateTime::now_utc();
    for f in state
        .fleet
        .iter()
        .filter(|f| f.customer == Some(customer) && !f.removed && f.expires > now)
    {
        if let mssp_wire::fleet::DecisionItem::Rule { rule } = &f.item {
            let id = crate::layers::fleet_rule_id(f.version);
            let mut doc = rule.clone();
            if let Some(o) = doc.as_object_mut() {
                o.insert("id".into(), id.into());
            }
            push(
                Layer::Fleet,
                id,
                doc,
                format!(
                    "fleet controller (decision {} v{}: {})",
                    f.id, f.version, f.reason
                ),
                ts(f.created),
                Some(ts(f.expires)),
            );
        }
    }
    for a in state.auto.iter().filter(|a| a.customer == customer) {
        if let mssp_detect::engine::AutoKind::Rule { id, rule } = &a.kind {
            push(
                Layer::Auto,
                *id,
                rule.clone(),
                format!("mssp detector (attack {})", a.attack),
                ts(a.since),
                Some(ts(a.expires)),
            );
        }
    }
    if state.policy.customer(customer).is_some() {
        let who = format!("controller (policy version {})", state.central_version());
        let at = state
            .central
            .as_ref()
            .map(|c| ts(c.applied_at))
            .unwrap_or_default();
        let docs = state
            .policy
            .doc
            .customers
            .iter()
            .find(|x| x.id == customer)
            .map(|x| x.rules.as_slice())
            .unwrap_or_default();
        for r in docs {
            push(
                Layer::Central,
                r.id,
                serde_json::to_value(r).unwrap_or_default(),
                who.clone(),
                at.clone(),
                None,
            );
        }
    }
    out.sort_by_key(|r| r.order.unwrap_or(usize::MAX));
    out
}

/// The refusal for an id the central policy does not know, listing some that it does.
pub fn unknown_customer_message<B: MapBackend>(state: &AgentState<B>, id: u32) -> String {
    let mut known: Vec<u32> = state.policy.customers.iter().map(|c| c.id).collect();
    known.sort_unstable();
    let list = if known.len() > 12 {
        format!(
            "{} customers, e.g. {}",
            known.len(),
            known[..12]
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if known.is_empty() {
        "none: no central policy holds customers yet".into()
    } else {
        known
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "unknown customer id {id}; the central policy (version {}) has {list}",
        state.central_version()
    )
}

/// What a metrics scrape shows, read under the lock. A failed map read leaves those
/// families empty; the rest still renders.
pub fn metrics_snapshot<B: MapBackend>(
    agent: &Agent<B>,
    state: &AgentState<B>,
) -> metrics::Snapshot {
    use crate::metrics::{
        CustomerInfoLabels, EntryLabels, InterfaceLabels, MapLabels, PacketLabels, RuleLabels,
        Snapshot,
    };
    let cfg = agent.config();
    let mut s = Snapshot::default();
    let mut slots = vec![(None, 0u32)];
    slots.extend(state.dp.customers().into_iter().map(|(c, s)| (Some(c), s)));
    if let Ok(table) = state.dp.backend().read_counter_table() {
        for (customer, slot) in slots {
            let label = customer.map_or_else(|| "none".to_string(), |c| c.to_string());
            for (k, c) in table.of(slot).nonzero() {
                s.packets.push((
                    PacketLabels {
                        customer: label.clone(),
                        verdict: k.verdict_name(),
                        reason: k.reason_name(),
                    },
                    c.packets,
                    c.bytes,
                ));
            }
        }
    }
    if cfg.metrics_entry_hits != "none" {
        let all = cfg.metrics_entry_hits == "all";
        let mut entries: Vec<_> = state.dp.entries().map(|(k, id)| (*k, id)).collect();
        entries.sort_unstable_by_key(|(_, id)| *id);
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let (lo, hi) = (first.1, last.1);
            if let Ok(vals) = state.dp.backend().read_counters_bulk(true, lo, hi - lo + 1) {
                for (k, id) in &entries {
                    let c = vals[(id - lo) as usize];
                    if c.packets == 0 && !all {
                        continue;
                    }
                    s.entry_hits.push((
                        EntryLabels {
                            list: match k.scope {
                                Scope::Global => "global".to_string(),
                                Scope::Customer(c) => c.to_string(),
                            },
                            prefix: format_net(&k.net),
                            layer: k.layer.name(),
                        },
                        c.packets,
                        c.bytes,
                    ));
                }
            }
        }
    }
    let mut stats: Vec<_> = state.dp.stat_keys().map(|(k, id)| (*k, id)).collect();
    stats.sort_unstable_by_key(|(_, id)| *id);
    if let (Some(first), Some(last)) = (stats.first(), stats.last()) {
        let (lo, hi) = (first.1, last.1);
        if let Ok(vals) = state.dp.backend().read_rule_stats(lo, hi - lo + 1) {
            for (k, id) in &stats {
                let StatKind::Rule { layer, id: rule } = k.kind else {
                    continue;
                };
                let c = vals[(id - lo) as usize];
                if c.packets == 0 && c.limited_packets == 0 {
                    continue;
                }
                s.rules.push((
                    RuleLabels {
                        customer: k.customer.to_string(),
                        rule: rule.to_string(),
                        layer: layer.name(),
                    },
                    c.packets,
                    c.bytes,
                    c.limited_packets,
                ));
            }
        }
    }
    s.maps = state
        .dp
        .fill()
        .iter()
        .map(|f| (MapLabels { map: f.name }, f.used as u64, f.capacity as u64))
        .collect();
    s.customers = state
        .policy
        .customers
        .iter()
        .map(|c| CustomerInfoLabels {
            customer: c.id.to_string(),
            name: c.name.clone().unwrap_or_default(),
        })
        .collect();
    s.central_version = state.central_version();
    s.local_version = state.local.version;
    s.local_entries = state.local.entries.len() as u64;
    s.last_apply = state.last_apply.as_ref().map(|l| {
        (
            l.at.unix_timestamp_nanos() as f64 / 1e9,
            l.duration.as_secs_f64(),
        )
    });
    s.interfaces = state
        .attached
        .iter()
        .map(|a| InterfaceLabels {
            interface: a.name.clone(),
            mode: a.mode.clone(),
        })
        .collect();
    if !cfg.customer_interfaces.is_empty() {
        s.filtering = Some(filter_metrics(agent, state));
    }
    s
}

fn filter_metrics<B: MapBackend>(
    agent: &Agent<B>,
    state: &AgentState<B>,
) -> metrics::FilterMetrics {
    use crate::metrics::{FilterActionLabels, FilterCustomerLabels, FilterMetrics, KindLabels};
    let st = agent.filtering.status();
    let mut m = FilterMetrics {
        inspector_up: st.running,
        fail_open: st.fail_open,
        restarts: st.restarts,
        ..FilterMetrics::default()
    };
    for name in mssp_common::filter::filter_stat::NAMES {
        if let Some(v) = st.kernel.get(name) {
            m.kernel.push((KindLabels { kind: name }, *v));
        }
    }
    // Counters restart with the inspector; its report is per process (a restart shows as a
    // counter reset, which Prometheus handles).
    if let Some(r) = crate::filtering::read_report(&state.store.dir) {
        for c in &r.customers {
            let customer = if c.id == 0 {
                "none".to_string()
            } else {
                c.id.to_string()
            };
            let customer_name = c.name.clone().unwrap_or_default();
            m.customers.push((
                FilterCustomerLabels {
                    customer: customer.clone(),
                    customer_name: customer_name.clone(),
                },
                c.counts.inspected,
                c.counts.allowed,
            ));
            for (action, n) in [
                ("nxdomain", c.counts.nxdomain),
                ("sinkhole", c.counts.sinkhole),
                ("drop", c.counts.dropped),
                ("reset", c.counts.reset),
            ] {
                if n > 0 {
                    m.blocked.push((
                        FilterActionLabels {
                            customer: customer.clone(),
                            customer_name: customer_name.clone(),
                            action,
                        },
                        n,
                    ));
                }
            }
        }
    }
    m
}
