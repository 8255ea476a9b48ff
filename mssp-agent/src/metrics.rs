//! Prometheus exposition at `/metrics` (prometheus-client). The metric families are
//! registered once, at start, with typed label sets; each scrape encodes a [`Snapshot`] the
//! agent takes under its lock — this module never sees the agent's internals. Series with
//! zero packets are left out, to keep cardinality bounded.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// Everything a scrape shows, read in one go.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub packets: Vec<(PacketLabels, u64, u64)>,
    pub entry_hits: Vec<(EntryLabels, u64, u64)>,
    /// (labels, packets, bytes, rate-limited packets).
    pub rules: Vec<(RuleLabels, u64, u64, u64)>,
    pub maps: Vec<(MapLabels, u64, u64)>,
    pub customers: Vec<CustomerInfoLabels>,
    pub central_version: u64,
    pub local_version: u64,
    pub local_entries: u64,
    /// (unix time, seconds) of the last successful publish.
    pub last_apply: Option<(f64, f64)>,
    pub interfaces: Vec<InterfaceLabels>,
    pub detection: DetectionMetrics,
    /// With customer interfaces.
    pub filtering: Option<FilterMetrics>,
}

/// Content filtering's families.
#[derive(Clone, Debug, Default)]
pub struct FilterMetrics {
    pub inspector_up: bool,
    pub fail_open: bool,
    pub restarts: u64,
    /// (customer, inspected, allowed).
    pub customers: Vec<(FilterCustomerLabels, u64, u64)>,
    /// (customer and action, blocked).
    pub blocked: Vec<(FilterActionLabels, u64)>,
    /// The customer program's own counters (steered, fail_open, cache_allow, ...).
    pub kernel: Vec<(KindLabels, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterCustomerLabels {
    pub customer: String,
    pub customer_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterActionLabels {
    pub customer: String,
    pub customer_name: String,
    pub action: &'static str,
}

/// Attack detection's families.
#[derive(Clone, Debug, Default)]
pub struct DetectionMetrics {
    /// (customer, active attacks).
    pub attacks_active: Vec<(CustomerLabels, u64)>,
    pub attacks_total: u64,
    pub auto_installed_total: u64,
    pub auto_removed_total: u64,
    /// (kind "rule" or "source", in force now).
    pub auto_items: Vec<(KindLabels, u64)>,
    pub samples_total: u64,
    pub sample_every: u64,
    pub detection_latency: Option<prometheus_client::metrics::histogram::Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CustomerLabels {
    pub customer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn encode_filtering(enc: &mut DescriptorEncoder, f: &FilterMetrics) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "filter_inspector_up",
        "The content-filtering inspector runs",
        Some(f.inspector_up as i64),
    )?;
    gauge(
        enc,
        "filter_fail_open",
        "1 while customer-interface traffic passes uninspected (inspector down or stalled)",
        Some(f.fail_open as i64),
    )?;
    counters(
        enc,
        "filter_inspector_restarts",
        "Times the agent restarted the inspector",
        std::iter::once((KindLabels { kind: "all" }, f.restarts)),
    )?;
    counters(
        enc,
        "filter_inspected",
        "Packets the inspector read, per customer",
        f.customers.iter().map(|(l, n, _)| (l.clone(), *n)),
    )?;
    counters(
        enc,
        "filter_allowed",
        "Packets the inspector let through, per customer",
        f.customers.iter().map(|(l, _, n)| (l.clone(), *n)),
    )?;
    counters(
        enc,
        "filter_blocked",
        "Blocked names per customer and action (nxdomain, sinkhole, drop, reset)",
        f.blocked.iter().map(|(l, n)| (l.clone(), *n)),
    )?;
    counters(
        enc,
        "filter_kernel_packets",
        "The customer-interface program's packets, by what it did",
        f.kernel.iter().map(|(l, n)| (l.clone(), *n)),
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PacketLabels {
    /// Customer id, or "none".
    pub customer: String,
    pub verdict: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabels {
    /// "global" or the customer id.
    pub list: String,
    pub prefix: String,
    pub layer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub customer: String,
    pub rule: String,
    pub layer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CustomerInfoLabels {
    pub customer: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LayerLabels {
    pub layer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
    pub mode: String,
}

/// The agent's metric families, filled from a snapshot at each scrape.
struct AgentCollector {
    source: Arc<dyn Fn() -> Snapshot + Send + Sync>,
}

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCollector")
    }
}

fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels, when there is a value.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<V>,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let Some(v) = value {
        ConstGauge::new(v).encode(m)?;
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = (self.source)();
        counters(
            &mut enc,
            "packets",
            "Packets per customer, verdict and reason",
            s.packets.iter().map(|(l, p, _)| (l.clone(), *p)),
        )?;
        counters(
            &mut enc,
            "bytes",
            "Bytes per customer, verdict and reason",
            s.packets.iter().map(|(l, _, b)| (l.clone(), *b)),
        )?;
        counters(
            &mut enc,
            "entry_hit_packets",
            "Packets that hit a source entry (drop, allow or monitor)",
            s.entry_hits.iter().map(|(l, p, _)| (l.clone(), *p)),
        )?;
        counters(
            &mut enc,
            "entry_hit_bytes",
            "Bytes that hit a source entry",
            s.entry_hits.iter().map(|(l, _, b)| (l.clone(), *b)),
        )?;
        counters(
            &mut enc,
            "rule_packets",
            "Packets that matched a rule",
            s.rules.iter().map(|(l, p, _, _)| (l.clone(), *p)),
        )?;
        counters(
            &mut enc,
            "rule_bytes",
            "Bytes that matched a rule",
            s.rules.iter().map(|(l, _, b, _)| (l.clone(), *b)),
        )?;
        counters(
            &mut enc,
            "rule_limited_packets",
            "Packets a rule's rate limit dropped",
            s.rules.iter().map(|(l, _, _, x)| (l.clone(), *x)),
        )?;
        gauges(
            &mut enc,
            "map_entries",
            "Entries in use per map",
            s.maps.iter().map(|(l, used, _)| (l.clone(), *used as i64)),
        )?;
        gauges(
            &mut enc,
            "map_capacity",
            "Entries each map holds",
            s.maps.iter().map(|(l, _, cap)| (l.clone(), *cap as i64)),
        )?;
        gauges(
            &mut enc,
            "customer_info",
            "One series per customer with its name (join on customer)",
            s.customers.iter().map(|l| (l.clone(), 1)),
        )?;
        gauges(
            &mut enc,
            "policy_version",
            "Version of each policy layer in force (central: the applied push; local: bumped by every CLI change)",
            [
                (LayerLabels { layer: "central" }, s.central_version as i64),
                (LayerLabels { layer: "local" }, s.local_version as i64),
            ]
            .into_iter(),
        )?;
        gauge(
            &mut enc,
            "local_entries",
            "Source entries in the local layer (CLI)",
            Some(s.local_entries as i64),
        )?;
        gauge(
            &mut enc,
            "last_apply_timestamp_seconds",
            "When policy was last published",
            s.last_apply.map(|(at, _)| at),
        )?;
        gauge(
            &mut enc,
            "last_apply_duration_seconds",
            "How long the last publish took",
            s.last_apply.map(|(_, d)| d),
        )?;
        gauges(
            &mut enc,
            "interface_attached",
            "Interfaces the filter is attached to, by XDP mode",
            s.interfaces.iter().map(|l| (l.clone(), 1)),
        )?;
        let d = &s.detection;
        gauges(
            &mut enc,
            "attacks_active",
            "Attacks in progress per customer",
            d.attacks_active.iter().map(|(l, n)| (l.clone(), *n as i64)),
        )?;
        counters(
            &mut enc,
            "attacks",
            "Attacks detected since the agent started",
            std::iter::once((KindLabels { kind: "all" }, d.attacks_total)),
        )?;
        counters(
            &mut enc,
            "auto_installed",
            "Auto rules and source entries installed against attacks",
            std::iter::once((KindLabels { kind: "all" }, d.auto_installed_total)),
        )?;
        counters(
            &mut enc,
            "auto_removed",
            "Auto rules and source entries removed (attack ended or re-planned)",
            std::iter::once((KindLabels { kind: "all" }, d.auto_removed_total)),
        )?;
        gauges(
            &mut enc,
            "auto_items",
            "Auto rules and source entries in force, by kind",
            d.auto_items.iter().map(|(l, n)| (l.clone(), *n as i64)),
        )?;
        counters(
            &mut enc,
            "samples",
            "Packets sampled by the data path and read by the agent",
            std::iter::once((KindLabels { kind: "all" }, d.samples_total)),
        )?;
        gauge(
            &mut enc,
            "sample_every",
            "One packet in this many is sampled (adapts to the load)",
            (d.sample_every > 0).then_some(d.sample_every as i64),
        )?;
        if let Some(f) = &s.filtering {
            encode_filtering(&mut enc, f)?;
        }
        if let Some(h) = &d.detection_latency {
            let m = enc.encode_descriptor(
                "attack_detection_seconds",
                "Seconds from an attack's onset to its detection",
                None,
                MetricType::Histogram,
            )?;
            h.encode(m)?;
        }
        Ok(())
    }
}

/// The registry, built once: `source` is called at every scrape.
pub fn registry(source: impl Fn() -> Snapshot + Send + Sync + 'static) -> Registry {
    let mut reg = Registry::with_prefix("mssp");
    reg.register_collector(Box::new(AgentCollector {
        source: Arc::new(source),
    }));
    reg
}

/// The Prometheus text of one scrape.
pub fn render(reg: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, reg).is_err() {
        out.clear();
    }
    out
}

async fn metrics(State(reg): State<Arc<Registry>>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || render(&reg))
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

pub fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_from_a_snapshot() {
        let snap = Snapshot {
            packets: vec![(
                PacketLabels {
                    customer: "7".into(),
                    verdict: "drop",
                    reason: "customer_block",
                },
                3,
                300,
            )],
            customers: vec![CustomerInfoLabels {
                customer: "7".into(),
                name: "acme".into(),
            }],
            central_version: 4,
            local_version: 2,
            local_entries: 9,
            ..Snapshot::default()
        };
        let reg = registry(move || snap.clone());
        let text = render(&reg);
        assert!(
            text.contains(
                r#"mssp_packets_total{customer="7",verdict="drop",reason="customer_block"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"mssp_customer_info{customer="7",name="acme"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mssp_policy_version{layer="local"} 2"#),
            "{text}"
        );
        assert!(text.contains("mssp_local_entries 9"), "{text}");
    }
}
