//! What the controller knows, rebuilt from JetStream at start and kept current by tailing
//! the streams: every decision (the latest version of each id), every edge's ack of it,
//! the edges' heartbeats and the attack reports. Nothing lives only in this process.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mssp_wire::fleet::{Ack, Decision, DecisionView, EdgeView, FleetStatus, Heartbeat, Report};
use time::OffsetDateTime;

/// An edge is connected while its heartbeats are this recent.
pub const CONNECTED_SECS: i64 = 15;
const REPORTS_KEPT: usize = 10_000;

#[derive(Default)]
pub struct FleetState {
    pub decisions: BTreeMap<String, Decision>,
    /// (decision id) → edge → its latest ack.
    pub acks: HashMap<String, HashMap<String, Ack>>,
    pub edges: BTreeMap<String, Heartbeat>,
    pub reports: VecDeque<Report>,
    /// When this controller first saw each decision version published (for ack timing).
    pub published_at: HashMap<(String, u64), OffsetDateTime>,
}

impl FleetState {
    pub fn version(&self) -> u64 {
        self.decisions
            .values()
            .map(|d| d.version)
            .max()
            .unwrap_or(0)
    }

    pub fn on_decision(&mut self, d: Decision) {
        self.published_at
            .entry((d.id.clone(), d.version))
            .or_insert(d.created);
        match self.decisions.get(&d.id) {
            Some(old) if old.version > d.version => {}
            _ => {
                self.decisions.insert(d.id.clone(), d);
            }
        }
    }

    pub fn on_ack(&mut self, a: Ack) {
        // An edge that acks is alive, even between heartbeats.
        let hb = self
            .edges
            .entry(a.edge.clone())
            .or_insert_with(|| Heartbeat {
                edge: a.edge.clone(),
                fleet_version: 0,
                central_version: 0,
                agent_version: String::new(),
                at: a.at,
            });
        hb.fleet_version = hb.fleet_version.max(a.fleet_version);
        if a.at > hb.at {
            hb.at = a.at;
        }
        self.acks
            .entry(a.decision.clone())
            .or_default()
            .insert(a.edge.clone(), a);
    }

    pub fn on_heartbeat(&mut self, h: Heartbeat) {
        self.edges.insert(h.edge.clone(), h);
    }

    pub fn on_report(&mut self, r: Report) {
        self.reports.push_front(r);
        self.reports.truncate(REPORTS_KEPT);
    }

    /// Decisions in force (not withdrawn, not expired).
    pub fn active(&self, now: OffsetDateTime) -> impl Iterator<Item = &Decision> {
        self.decisions
            .values()
            .filter(move |d| !d.removed && d.expires > now)
    }

    pub fn status(&self, now: OffsetDateTime) -> FleetStatus {
        let version = self.version();
        let edges: Vec<EdgeView> = self
            .edges
            .values()
            .map(|h| EdgeView {
                edge: h.edge.clone(),
                connected: (now - h.at).whole_seconds() < CONNECTED_SECS,
                last_seen: Some(h.at),
                fleet_version: h.fleet_version,
                lag: self
                    .decisions
                    .values()
                    .filter(|d| d.version > h.fleet_version)
                    .count() as u64,
            })
            .collect();
        let names: Vec<&String> = self.edges.keys().collect();
        let decisions = self
            .decisions
            .values()
            .filter(|d| d.expires > now || !d.removed)
            .filter(|d| d.expires > now)
            .map(|d| {
                let acks = self.acks.get(&d.id);
                let of_version: Vec<&Ack> = acks
                    .map(|m| m.values().filter(|a| a.version == d.version).collect())
                    .unwrap_or_default();
                let ok: Vec<&&Ack> = of_version.iter().filter(|a| a.ok).collect();
                let published = self
                    .published_at
                    .get(&(d.id.clone(), d.version))
                    .copied()
                    .unwrap_or(d.created);
                let times: Vec<f64> = ok
                    .iter()
                    .map(|a| (a.at - published).as_seconds_f64())
                    .collect();
                DecisionView {
                    id: d.id.clone(),
                    version: d.version,
                    customer: d.customer,
                    item: d.item.clone(),
                    expires: d.expires,
                    reason: d.reason.clone(),
                    acked: ok.len(),
                    edges: names.len(),
                    refused: of_version
                        .iter()
                        .filter(|a| !a.ok)
                        .map(|a| (a.edge.clone(), a.error.clone().unwrap_or_default()))
                        .collect(),
                    missing: names
                        .iter()
                        .filter(|e| !of_version.iter().any(|a| &a.edge == **e))
                        .map(|e| (*e).clone())
                        .collect(),
                    first_ack_s: times.iter().copied().reduce(f64::min),
                    last_ack_s: if ok.len() == names.len() {
                        times.iter().copied().reduce(f64::max)
                    } else {
                        None
                    },
                }
            })
            .collect();
        FleetStatus {
            fleet_version: version,
            edges,
            decisions,
        }
    }
}
