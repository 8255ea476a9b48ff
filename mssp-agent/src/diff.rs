//! What a document would change against the central policy in force (`mssp policy diff`,
//! `mssp push --dry-run`): per customer, prefixes, source entries, rules and limits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mssp_common::Net;
use mssp_core::policy::{Policy, SourceEntry, cidr::format_net};
use mssp_wire::views::{CustomerDiff, PolicyDiff};

/// (added, removed, changed) between two source lists, by prefix.
fn sources(old: &[SourceEntry], new: &[SourceEntry]) -> (usize, usize, usize) {
    let o: HashMap<Net, &SourceEntry> = old.iter().map(|s| (s.net, s)).collect();
    let n: HashMap<Net, &SourceEntry> = new.iter().map(|s| (s.net, s)).collect();
    let added = n.keys().filter(|k| !o.contains_key(k)).count();
    let removed = o.keys().filter(|k| !n.contains_key(k)).count();
    let changed = n
        .iter()
        .filter(|(k, v)| o.get(k).is_some_and(|w| w != *v))
        .count();
    (added, removed, changed)
}

fn nets(list: &[Net]) -> BTreeSet<String> {
    list.iter().map(format_net).collect()
}

pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let (oi, ni) = (nets(&old.infrastructure), nets(&new.infrastructure));
    let (ga, gr, gc) = sources(&old.global, &new.global);
    let oc: BTreeMap<u32, _> = old.customers.iter().map(|c| (c.id, c)).collect();
    let nc: BTreeMap<u32, _> = new.customers.iter().map(|c| (c.id, c)).collect();
    let mut changed = Vec::new();
    for (id, n) in &nc {
        let Some(o) = oc.get(id) else { continue };
        let (op, np) = (nets(&o.prefixes), nets(&n.prefixes));
        let (sa, sr, sc) = sources(&o.sources, &n.sources);
        let orules: HashMap<u32, _> = o.rules.iter().map(|r| (r.id, r)).collect();
        let nrules: HashMap<u32, _> = n.rules.iter().map(|r| (r.id, r)).collect();
        let d = CustomerDiff {
            id: *id,
            name: n.name.clone(),
            prefixes_added: np.difference(&op).cloned().collect(),
            prefixes_removed: op.difference(&np).cloned().collect(),
            sources_added: sa,
            sources_removed: sr,
            sources_changed: sc,
            rules_added: nrules.keys().filter(|k| !orules.contains_key(k)).count(),
            rules_removed: orules.keys().filter(|k| !nrules.contains_key(k)).count(),
            rules_changed: nrules
                .iter()
                .filter(|(k, v)| orules.get(k).is_some_and(|w| w != *v))
                .count(),
            limits_changed: o.limits != n.limits,
        };
        if d != (CustomerDiff {
            id: *id,
            name: n.name.clone(),
            ..CustomerDiff::default()
        }) {
            changed.push(d);
        }
    }
    PolicyDiff {
        from_version: old.version,
        to_version: new.version,
        infrastructure_added: ni.difference(&oi).cloned().collect(),
        infrastructure_removed: oi.difference(&ni).cloned().collect(),
        global_added: ga,
        global_removed: gr,
        global_changed: gc,
        customers_added: nc.keys().filter(|k| !oc.contains_key(k)).copied().collect(),
        customers_removed: oc.keys().filter(|k| !nc.contains_key(k)).copied().collect(),
        customers_changed: changed,
    }
}

#[cfg(test)]
mod tests {
    use mssp_core::policy::{Capacity, parse_policy};

    use super::*;

    #[test]
    fn what_changes() {
        let p = |s: &str| parse_policy(s.as_bytes(), &Capacity::default()).unwrap();
        let a = p(
            r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/24"],
            "sources":[{"prefix":"198.18.1.0/24","action":"drop"},{"prefix":"198.18.2.0/24","action":"drop"}]},{"id":8}]}"#,
        );
        let b = p(
            r#"{"version":2,"customers":[{"id":7,"prefixes":["198.19.7.0/24","198.19.9.0/24"],
            "sources":[{"prefix":"198.18.1.0/24","action":"allow"},{"prefix":"198.18.3.0/24","action":"drop"}]},{"id":9}]}"#,
        );
        let d = diff(&a, &b);
        assert_eq!((d.customers_added, d.customers_removed), (vec![9], vec![8]));
        let c = &d.customers_changed[0];
        assert_eq!(c.prefixes_added, vec!["198.19.9.0/24".to_string()]);
        assert_eq!(
            (c.sources_added, c.sources_removed, c.sources_changed),
            (1, 1, 1)
        );
        assert!(diff(&a, &a).customers_changed.is_empty());
    }
}
