//! Correlation: the same attack (customer, target, fingerprint) reported by enough edges
//! within the window — or any attack on a customer the config names — becomes one fleet
//! decision for every edge, carrying the attack's mitigation and the reports behind it.

use std::collections::{HashMap, HashSet};

use mssp_wire::fleet::{DecisionItem, Report};
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::Correlation;

/// What to publish for a correlated attack.
#[derive(Debug, PartialEq)]
pub struct Proposal {
    /// Stable per (customer, target, fingerprint): a renewal replaces the decision.
    pub id: String,
    pub customer: u32,
    pub item: DecisionItem,
    pub reason: String,
}

#[derive(Default)]
pub struct Correlator {
    /// key → (edge → (attack id, when reported)).
    seen: HashMap<String, HashMap<String, (String, OffsetDateTime)>>,
    /// Keys already published, and when (renewed after half the TTL).
    published: HashMap<String, OffsetDateTime>,
}

/// The attack's fingerprint without what differs from edge to edge (TTL: other paths).
fn fingerprint(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("ttl");
    }
    v
}

fn key(r: &Report) -> Option<(String, DecisionItem)> {
    let a = &r.attack;
    let item = a.mitigation.iter().find_map(|m| match m.kind.as_str() {
        "rule" => m.rule.as_ref().map(|rule| {
            let mut rule = rule.clone();
            if let Some(o) = rule.as_object_mut() {
                o.remove("id");
                o.insert(
                    "comment".into(),
                    format!("fleet: attack on {}", a.target).into(),
                );
                if let Some(m) = o.get("match").cloned() {
                    o.insert("match".into(), fingerprint(&m));
                }
            }
            DecisionItem::Rule { rule }
        }),
        "source" => m.prefix.as_ref().map(|p| DecisionItem::Source {
            prefix: p.clone(),
            action: m.action.clone().unwrap_or_else(|| "drop".into()),
        }),
        _ => None,
    })?;
    let fp = a
        .fingerprint
        .as_ref()
        .map(|f| fingerprint(&f.matches))
        .unwrap_or(Value::Null);
    Some((format!("{}|{}|{fp}", a.customer, a.target), item))
}

/// A decision id from a key: `fa-` and 16 hex digits of its hash.
fn id_of(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    format!("fa-{:016x}", h.finish())
}

impl Correlator {
    pub fn on_report(
        &mut self,
        r: &Report,
        c: &Correlation,
        now: OffsetDateTime,
    ) -> Option<Proposal> {
        if !matches!(r.event.as_str(), "mitigated" | "peak" | "start") {
            return None;
        }
        let (key, item) = key(r)?;
        let window = time::Duration::seconds(c.window_secs as i64);
        let edges = self.seen.entry(key.clone()).or_default();
        edges.insert(r.edge.clone(), (r.attack.id.clone(), now));
        edges.retain(|_, (_, t)| now - *t <= window);
        let enough = edges.len() >= c.edges || c.fleet_customers.contains(&r.attack.customer);
        if !enough {
            return None;
        }
        let renew = time::Duration::seconds(c.ttl_secs as i64 / 2);
        if self.published.get(&key).is_some_and(|t| now - *t < renew) {
            return None;
        }
        self.published.insert(key.clone(), now);
        let mut names: Vec<String> = edges
            .iter()
            .map(|(e, (a, _))| format!("{e} (attack {a})"))
            .collect();
        names.sort();
        let why = if edges.len() >= c.edges {
            format!(
                "attack on {} reported by {} edges within {} s: {}",
                r.attack.target,
                edges.len(),
                c.window_secs,
                names.join(", ")
            )
        } else {
            format!(
                "attack on {} of fleet customer {}: {}",
                r.attack.target,
                r.attack.customer,
                names.join(", ")
            )
        };
        Some(Proposal {
            id: id_of(&key),
            customer: r.attack.customer,
            item,
            reason: why,
        })
    }

    /// Forgets keys no edge reported for the window (memory stays bounded).
    pub fn prune(&mut self, c: &Correlation, now: OffsetDateTime) {
        let window = time::Duration::seconds(c.window_secs as i64);
        let ttl = time::Duration::seconds(c.ttl_secs as i64);
        self.seen
            .retain(|_, e| e.values().any(|(_, t)| now - *t <= window));
        let live: HashSet<&String> = self.seen.keys().collect();
        self.published
            .retain(|k, t| live.contains(k) || now - *t < ttl);
    }
}
