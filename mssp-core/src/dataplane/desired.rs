//! The desired state the publisher makes true: infrastructure, customers and their prefixes,
//! and source entries with their layer, independent of the document they came from.

use std::sync::Arc;

pub use mssp_common::{Layer, Scope};
use mssp_common::{Net, abi::SourceAction};
use time::OffsetDateTime;

use crate::policy::{
    Policy, SourceEntry,
    rules::{Limits, RuleSpec},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredEntry {
    pub net: Net,
    pub action: SourceAction,
    pub expires: Option<OffsetDateTime>,
    pub layer: Layer,
}

impl DesiredEntry {
    fn central(s: &SourceEntry) -> DesiredEntry {
        DesiredEntry {
            net: s.net,
            action: s.action,
            expires: s.expires,
            layer: Layer::Central,
        }
    }

    pub fn in_effect(&self, now: OffsetDateTime) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DesiredRule {
    pub spec: RuleSpec,
    pub layer: Layer,
    /// Auto and fleet rules expire (in the data path too); central and local ones do not.
    pub expires: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCustomer {
    pub id: u32,
    pub prefixes: Vec<Net>,
    /// Shared, so the agent clones the central layer's desired state per apply in time
    /// proportional to its customers, not its million entries (`Arc::make_mut` to add).
    pub entries: Arc<Vec<DesiredEntry>>,
    pub rules: Vec<DesiredRule>,
    pub limits: Option<Limits>,
    /// Meter the customer's traffic per destination (attack detection is on).
    pub meter: bool,
    /// Inspect the customer's DNS, TLS and HTTP on customer interfaces (it blocks names).
    pub filter: bool,
    /// Drop the customer's QUIC (UDP/443) on customer interfaces.
    pub block_quic: bool,
}

impl DesiredCustomer {
    /// The rules in evaluation order: by layer, highest first (local, fleet, auto, central),
    /// each layer's in its own order; a rule replaces a lower layer's rule with the same id.
    pub fn effective_rules(&self) -> Vec<&DesiredRule> {
        let mut out: Vec<&DesiredRule> = Vec::with_capacity(self.rules.len());
        for layer in Layer::ALL.iter().rev() {
            for r in self.rules.iter().filter(|r| r.layer == *layer) {
                if !out.iter().any(|o| o.spec.id == r.spec.id) {
                    out.push(r);
                }
            }
        }
        out
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub infrastructure: Vec<Net>,
    pub global: Arc<Vec<DesiredEntry>>,
    pub customers: Vec<DesiredCustomer>,
    /// The global filtering list blocks names: every customer's DNS, TLS and HTTP is inspected.
    pub global_filter: bool,
}

impl Desired {
    /// The central layer of a policy.
    pub fn from_policy(p: &Policy) -> Desired {
        Desired {
            infrastructure: p.infrastructure.clone(),
            global: Arc::new(p.global.iter().map(DesiredEntry::central).collect()),
            customers: p
                .customers
                .iter()
                .map(|c| DesiredCustomer {
                    id: c.id,
                    prefixes: c.prefixes.clone(),
                    entries: Arc::new(c.sources.iter().map(DesiredEntry::central).collect()),
                    rules: c
                        .rules
                        .iter()
                        .map(|r| DesiredRule {
                            spec: r.clone(),
                            layer: Layer::Central,
                            expires: None,
                        })
                        .collect(),
                    limits: c.limits.clone(),
                    meter: p
                        .detection_of(c.id)
                        .is_some_and(|d| d.mode != crate::policy::detection::DetectMode::Off),
                    filter: c.filtering.as_ref().is_some_and(|f| f.inspects()),
                    block_quic: c.filtering.as_ref().is_some_and(|f| f.block_quic),
                })
                .collect(),
            global_filter: p.global_filtering.as_ref().is_some_and(|f| f.inspects()),
        }
    }

    /// The entries of a list that are enforced at `now`: one per prefix, the local layer's
    /// where both layers name the prefix, expired ones left out.
    pub fn effective(entries: &[DesiredEntry], now: OffsetDateTime) -> Vec<&DesiredEntry> {
        let mut all: Vec<&DesiredEntry> = entries.iter().collect();
        // Sorted by prefix, then layer: of each run of the same prefix the last one wins.
        all.sort_unstable_by_key(|e| (e.net.v6, e.net.addr, e.net.len, e.layer));
        let mut out: Vec<&DesiredEntry> = Vec::with_capacity(all.len());
        for e in all {
            match out.last_mut() {
                Some(last) if last.net == e.net => *last = e,
                _ => out.push(e),
            }
        }
        out.retain(|e| e.in_effect(now));
        out
    }

    /// The earliest expiry still ahead of `now`, when the publisher must run again.
    pub fn next_expiry(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.expiry_times().filter(|t| *t > now).min()
    }

    /// Every expiry of its entries and rules (unsorted, with repeats).
    pub fn expiries(&self) -> Vec<OffsetDateTime> {
        self.expiry_times().collect()
    }

    fn expiry_times(&self) -> impl Iterator<Item = OffsetDateTime> + '_ {
        self.global
            .iter()
            .chain(self.customers.iter().flat_map(|c| c.entries.iter()))
            .filter_map(|e| e.expires)
            .chain(
                self.customers
                    .iter()
                    .flat_map(|c| c.rules.iter().filter_map(|r| r.expires)),
            )
    }
}
