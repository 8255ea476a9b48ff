//! Prometheus exposition at `/metrics` (prometheus-client). Counters are read from the maps at
//! scrape time; series with zero packets are left out to keep cardinality bounded.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use mssp_common::{Reason, Verdict, reason::NREASONS};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    agent::{Agent, Inner},
    dataplane::{Scope, backend::MapBackend},
    policy::cidr::format_net,
};

type Labels = Vec<(&'static str, String)>;

fn counter_family() -> Family<Labels, Counter> {
    Family::default()
}

fn gauge_family() -> Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> {
    Family::default()
}

fn customer_label(c: Option<u32>) -> String {
    c.map_or_else(|| "none".to_string(), |c| c.to_string())
}

/// Renders every metric of the agent in the Prometheus text format.
pub fn render(agent: &Agent, inner: &Inner) -> String {
    let mut reg = Registry::with_prefix("mssp");
    let cfg = agent.config();

    let packets = counter_family();
    let bytes = counter_family();
    let mut slots = vec![(None, 0u32)];
    slots.extend(inner.dp.customers().into_iter().map(|(c, s)| (Some(c), s)));
    // A failed read leaves these families empty; the rest still renders.
    let table = inner.dp.backend().read_counter_table().ok();
    for (customer, slot) in slots {
        let Some(table) = &table else { break };
        for (i, c) in table.of(slot).iter().enumerate() {
            let i = i as u32;
            if c.packets == 0 {
                continue;
            }
            let (v, r) = (i / NREASONS, i % NREASONS);
            let labels: Labels = vec![
                ("customer", customer_label(customer)),
                (
                    "verdict",
                    Verdict::from_u32(v).map_or("unknown", |x| x.name()).into(),
                ),
                (
                    "reason",
                    Reason::from_u32(r).map_or("unknown", |x| x.name()).into(),
                ),
            ];
            packets.get_or_create(&labels).inc_by(c.packets);
            bytes.get_or_create(&labels).inc_by(c.bytes);
        }
    }
    reg.register(
        "packets",
        "Packets per customer, verdict and reason",
        packets,
    );
    reg.register("bytes", "Bytes per customer, verdict and reason", bytes);

    if cfg.metrics_entry_hits != "none" {
        let hp = counter_family();
        let hb = counter_family();
        let all = cfg.metrics_entry_hits == "all";
        let mut entries: Vec<_> = inner.dp.entries().map(|(k, id)| (*k, id)).collect();
        entries.sort_unstable_by_key(|(_, id)| *id);
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let (lo, hi) = (first.1, last.1);
            if let Ok(vals) = inner.dp.backend().read_counters_bulk(true, lo, hi - lo + 1) {
                for (k, id) in &entries {
                    let c = vals[(id - lo) as usize];
                    if c.packets == 0 && !all {
                        continue;
                    }
                    let scope = match k.scope {
                        Scope::Global => "global".to_string(),
                        Scope::Customer(c) => c.to_string(),
                    };
                    let labels: Labels = vec![
                        ("list", scope),
                        ("prefix", format_net(&k.net)),
                        ("layer", k.layer.name().into()),
                    ];
                    hp.get_or_create(&labels).inc_by(c.packets);
                    hb.get_or_create(&labels).inc_by(c.bytes);
                }
            }
        }
        reg.register(
            "entry_hit_packets",
            "Packets that hit a source entry (drop, allow or monitor)",
            hp,
        );
        reg.register("entry_hit_bytes", "Bytes that hit a source entry", hb);
    }

    let rp = counter_family();
    let rb = counter_family();
    let rl = counter_family();
    let mut stats: Vec<_> = inner.dp.stat_keys().map(|(k, id)| (*k, id)).collect();
    stats.sort_unstable_by_key(|(_, id)| *id);
    if let (Some(first), Some(last)) = (stats.first(), stats.last()) {
        let (lo, hi) = (first.1, last.1);
        if let Ok(vals) = inner.dp.backend().read_rule_stats(lo, hi - lo + 1) {
            for (k, id) in &stats {
                let crate::dataplane::StatKind::Rule { layer, id: rule } = k.kind else {
                    continue;
                };
                let c = vals[(id - lo) as usize];
                let labels: Labels = vec![
                    ("customer", k.customer.to_string()),
                    ("rule", rule.to_string()),
                    ("layer", layer.name().into()),
                ];
                rp.get_or_create(&labels).inc_by(c.packets);
                rb.get_or_create(&labels).inc_by(c.bytes);
                rl.get_or_create(&labels).inc_by(c.limited_packets);
            }
        }
    }
    reg.register("rule_packets", "Packets that matched a rule", rp);
    reg.register("rule_bytes", "Bytes that matched a rule", rb);
    reg.register(
        "rule_limited_packets",
        "Packets a rule's rate limit dropped",
        rl,
    );

    let fill = gauge_family();
    let cap = gauge_family();
    for f in inner.dp.fill() {
        let l: Labels = vec![("map", f.name.to_string())];
        fill.get_or_create(&l).set(f.used as f64);
        cap.get_or_create(&l).set(f.capacity as f64);
    }
    reg.register("map_entries", "Entries in use per map", fill);
    reg.register("map_capacity", "Entries each map holds", cap);

    let version = gauge_family();
    version
        .get_or_create(&vec![("layer", "central".to_string())])
        .set(inner.central_version() as f64);
    version
        .get_or_create(&vec![("layer", "local".to_string())])
        .set(inner.local.entries.len() as f64);
    reg.register(
        "policy_version",
        "Central: version of the applied push; local: number of CLI entries",
        version,
    );

    let at = gauge_family();
    let dur = gauge_family();
    if let Some(l) = &inner.last_apply {
        at.get_or_create(&vec![])
            .set(l.at.unix_timestamp_nanos() as f64 / 1e9);
        dur.get_or_create(&vec![]).set(l.duration.as_secs_f64());
    }
    reg.register(
        "last_apply_timestamp_seconds",
        "When policy was last published",
        at,
    );
    reg.register(
        "last_apply_duration_seconds",
        "How long the last publish took",
        dur,
    );

    let attached = gauge_family();
    for a in &inner.attached {
        attached
            .get_or_create(&vec![
                ("interface", a.name.clone()),
                ("mode", a.mode.clone()),
            ])
            .set(1.0);
    }
    reg.register(
        "interface_attached",
        "Interfaces the filter is attached to, by XDP mode",
        attached,
    );

    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    let a = agent.clone();
    let body = tokio::task::spawn_blocking(move || render(&a, &a.lock()))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

pub async fn serve(
    agent: Arc<Agent>,
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics_listen {addr}: {e}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(agent);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    }))
}
