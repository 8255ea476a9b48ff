//! What the detector reads of the policy, taken once per publish: each customer's detection
//! settings in force (local over central, a customer's own over the default) and the
//! sources it must never block (infrastructure; allowlisted globally or for the customer).

use std::collections::{HashMap, HashSet};

use mssp_common::{Net, abi::SourceAction};
use mssp_core::{
    dataplane::Desired,
    policy::{
        Policy,
        detection::{DetectMode, Detection, detection},
    },
};
use mssp_detect::{Protected, Settings};

use crate::store::LocalFile;

/// The detection settings in force for `customer` (`None`: off).
pub fn effective_detection(policy: &Policy, local: &LocalFile, customer: u32) -> Option<Detection> {
    let parse = |doc: &mssp_core::policy::detection::DetectionDoc| {
        detection(doc, "detection", &mut Vec::new())
    };
    let d = if let Some(l) = local.detection.customers.get(&customer) {
        parse(&l.detection)
    } else if let Some(c) = policy.customer(customer).and_then(|c| c.detection.clone()) {
        Some(c)
    } else if let Some(l) = &local.detection.default {
        parse(&l.detection)
    } else {
        policy.detection.clone()
    };
    d.filter(|d| d.mode != DetectMode::Off)
}

/// Every customer's detection in force, and names.
#[derive(Debug, Default)]
pub struct DetectionSnapshot {
    pub detection: HashMap<u32, Detection>,
    pub names: HashMap<u32, String>,
}

impl DetectionSnapshot {
    pub fn build(policy: &Policy, local: &LocalFile) -> DetectionSnapshot {
        let mut s = DetectionSnapshot::default();
        for c in &policy.customers {
            if let Some(d) = effective_detection(policy, local, c.id) {
                s.detection.insert(c.id, d);
            }
            if let Some(n) = &c.name {
                s.names.insert(c.id, n.clone());
            }
        }
        s
    }
}

impl Settings for DetectionSnapshot {
    fn detection(&self, customer: u32) -> Option<Detection> {
        self.detection.get(&customer).cloned()
    }

    fn name(&self, customer: u32) -> Option<String> {
        self.names.get(&customer).cloned()
    }
}

/// Prefixes by length, for "is this address inside any of them" in one hash probe per
/// length present.
#[derive(Debug, Default)]
struct PrefixSet {
    by_len: HashMap<(bool, u8), HashSet<u128>>,
}

impl PrefixSet {
    fn insert(&mut self, n: &Net) {
        self.by_len.entry((n.v6, n.len)).or_default().insert(n.addr);
    }

    fn contains(&self, v6: bool, addr: u128) -> bool {
        self.by_len
            .iter()
            .any(|((nv6, len), set)| *nv6 == v6 && set.contains(&{ Net::new(v6, addr, *len).addr }))
    }
}

/// Infrastructure and allowlisted sources, every layer (of metered customers: see `build`).
#[derive(Debug, Default)]
pub struct ProtectedSet {
    always: PrefixSet,
    customers: HashMap<u32, PrefixSet>,
}

impl ProtectedSet {
    pub fn build(d: &Desired) -> ProtectedSet {
        let mut p = ProtectedSet::default();
        for n in &d.infrastructure {
            p.always.insert(n);
        }
        for e in d.global.iter().filter(|e| e.action == SourceAction::Allow) {
            p.always.insert(&e.net);
        }
        // Only metered customers can have an attack to mitigate (the detector reads meters),
        // so only theirs are collected: scanning every list was ~5 ms of each CLI edit at a
        // million entries.
        for c in d.customers.iter().filter(|c| c.meter) {
            for e in c.entries.iter().filter(|e| e.action == SourceAction::Allow) {
                p.customers.entry(c.id).or_default().insert(&e.net);
            }
        }
        p
    }
}

impl Protected for ProtectedSet {
    fn protected(&self, customer: u32, v6: bool, addr: u128) -> bool {
        self.always.contains(v6, addr)
            || self
                .customers
                .get(&customer)
                .is_some_and(|s| s.contains(v6, addr))
    }
}
