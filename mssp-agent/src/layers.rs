//! The union of the policy layers the agent holds: the central policy (pushed), this edge's
//! attack mitigations (auto) and the NOC's local layer, into the one desired state the
//! publisher makes true.

use mssp_common::{Layer, Scope, abi::SourceAction};
use mssp_core::{
    dataplane::{Desired, DesiredEntry, DesiredRule},
    policy::{Policy, cidr::parse_cidr, rules, rules_doc::RuleDoc},
};
use mssp_detect::engine::{AutoItem, AutoKind};

use crate::{ips::settings::effective_detection, store::LocalFile};

/// Local entries join the central ones; where both name the same prefix in the same list,
/// the higher layer's is enforced (see [`Desired::effective`]). Entries and rules of a
/// customer the central policy does not have are kept but not enforced. Customers with
/// detection on are metered.
pub fn desired(policy: &Policy, local: &LocalFile, auto: &[AutoItem]) -> Desired {
    let mut d = Desired::from_policy(policy);
    for c in &mut d.customers {
        c.meter = effective_detection(policy, local, c.id).is_some();
    }
    for r in &local.rules {
        let Some(c) = d.customers.iter_mut().find(|c| c.id == r.customer) else {
            continue;
        };
        let mut errors = Vec::new();
        if let Some(spec) = rules::rule(&r.rule, "rule", &c.prefixes, &mut errors) {
            c.rules.push(DesiredRule {
                spec,
                layer: Layer::Local,
                expires: None,
            });
        }
    }
    for a in auto {
        let Some(c) = d.customers.iter_mut().find(|c| c.id == a.customer) else {
            continue;
        };
        match &a.kind {
            AutoKind::Rule { rule, .. } => {
                let Ok(doc) = serde_json::from_value::<RuleDoc>(rule.clone()) else {
                    log::error!("auto rule of attack {} does not parse: {rule}", a.attack);
                    continue;
                };
                let mut errors = Vec::new();
                match rules::rule(&doc, "rule", &c.prefixes, &mut errors) {
                    Some(spec) => c.rules.push(DesiredRule {
                        spec,
                        layer: Layer::Auto,
                        expires: Some(a.expires),
                    }),
                    None => log::error!(
                        "auto rule of attack {} refused: {}",
                        a.attack,
                        errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                }
            }
            AutoKind::Source { prefix } => match parse_cidr(prefix, true) {
                Ok(net) => c.entries.push(DesiredEntry {
                    net,
                    action: SourceAction::Drop,
                    expires: Some(a.expires),
                    layer: Layer::Auto,
                }),
                Err(e) => log::error!("auto entry {prefix} of attack {}: {e}", a.attack),
            },
        }
    }
    for e in &local.entries {
        let de = DesiredEntry {
            net: e.net(),
            action: e.action,
            expires: e.expires,
            layer: Layer::Local,
        };
        match e.scope {
            Scope::Global => d.global.push(de),
            Scope::Customer(id) => {
                if let Some(c) = d.customers.iter_mut().find(|c| c.id == id) {
                    c.entries.push(de);
                }
            }
        }
    }
    d
}
