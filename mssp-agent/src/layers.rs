//! The union of the policy layers the agent holds: the central policy (pushed), this edge's
//! attack mitigations (auto), the controller's fleet decisions and the NOC's local layer,
//! into the one desired state the publisher makes true. Precedence where two name the same
//! prefix: local > fleet > auto > central.

use std::sync::Arc;

use mssp_common::{Layer, Scope, abi::SourceAction};
use mssp_core::{
    dataplane::{Desired, DesiredEntry, DesiredRule},
    policy::{Policy, cidr::parse_cidr, rules, rules_doc::RuleDoc},
};
use mssp_detect::engine::{AutoItem, AutoKind};

use mssp_wire::fleet::{Decision, DecisionItem};

use crate::{ips::settings::effective_detection, store::LocalFile};

/// A fleet decision as the data path holds it.
pub enum FleetItem {
    Entry(DesiredEntry),
    /// A rule of that customer.
    Rule(u32, DesiredRule),
}

/// The rule id of a fleet decision's rule: in the range reserved for the fleet layer,
/// stable for the decision's version.
pub fn fleet_rule_id(version: u64) -> u32 {
    mssp_core::policy::rules::FLEET_RULE_IDS + (version % 0x1000_0000) as u32
}

/// Checks a fleet decision against this edge's policy (its customer, the rule's syntax and
/// destinations) and gives what it enforces.
pub fn fleet_item(f: &Decision, d: &Desired) -> Result<FleetItem, String> {
    match &f.item {
        DecisionItem::Source { prefix, action } => {
            let net = parse_cidr(prefix, true).map_err(|e| format!("prefix {prefix:?}: {e}"))?;
            let action = [
                SourceAction::Drop,
                SourceAction::Allow,
                SourceAction::Monitor,
            ]
            .into_iter()
            .find(|a| a.name() == action)
            .ok_or_else(|| format!("action {action:?}: give drop, allow or monitor"))?;
            if let Some(id) = f.customer {
                if !d.customers.iter().any(|c| c.id == id) {
                    return Err(format!("customer {id} is not in this edge's policy"));
                }
            }
            Ok(FleetItem::Entry(DesiredEntry {
                net,
                action,
                expires: Some(f.expires),
                layer: Layer::Fleet,
            }))
        }
        DecisionItem::Rule { rule } => {
            let id = f.customer.ok_or("a fleet rule needs a customer")?;
            let c = d
                .customers
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| format!("customer {id} is not in this edge's policy"))?;
            let mut rule = rule.clone();
            if let Some(o) = rule.as_object_mut() {
                o.insert("id".into(), fleet_rule_id(f.version).into());
            }
            let doc: RuleDoc = serde_json::from_value(rule).map_err(|e| format!("rule: {e}"))?;
            let mut errors = Vec::new();
            let spec = rules::rule(&doc, "rule", &c.prefixes, &mut errors).ok_or_else(|| {
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            Ok(FleetItem::Rule(
                id,
                DesiredRule {
                    spec,
                    layer: Layer::Fleet,
                    expires: Some(f.expires),
                },
            ))
        }
    }
}

/// Local entries join the central ones; where both name the same prefix in the same list,
/// the higher layer's is enforced (see [`Desired::effective`]). Entries and rules of a
/// customer the central policy does not have are kept but not enforced. Customers with
/// detection on are metered.
pub fn desired(
    policy: &Policy,
    local: &LocalFile,
    auto: &[AutoItem],
    fleet: &[Decision],
) -> Desired {
    desired_over(Desired::from_policy(policy), policy, local, auto, fleet)
}

/// [`desired`] over the central layer's desired state already built (`central` is
/// `Desired::from_policy(policy)`, which the agent keeps between applies).
pub fn desired_over(
    central: Desired,
    policy: &Policy,
    local: &LocalFile,
    auto: &[AutoItem],
    fleet: &[Decision],
) -> Desired {
    let mut d = central;
    // Customer id -> position, for the layers' additions (a search each was quadratic).
    let pos: std::collections::HashMap<u32, usize> = d
        .customers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i))
        .collect();
    let at = |id: u32| pos.get(&id).copied();
    let now = time::OffsetDateTime::now_utc();
    for f in fleet.iter().filter(|f| !f.removed && f.expires > now) {
        match fleet_item(f, &d) {
            Ok(FleetItem::Entry(e)) => match f.customer {
                None => Arc::make_mut(&mut d.global).push(e),
                Some(id) => {
                    if let Some(i) = at(id) {
                        Arc::make_mut(&mut d.customers[i].entries).push(e);
                    }
                }
            },
            Ok(FleetItem::Rule(id, r)) => {
                if let Some(i) = at(id) {
                    d.customers[i].rules.push(r);
                }
            }
            Err(e) => log::error!("fleet decision {}: {e}", f.id),
        }
    }
    for c in &mut d.customers {
        c.meter = effective_detection(policy, local, c.id).is_some();
    }
    for n in &local.filter_names {
        match n.customer {
            None => d.global_filter = true,
            Some(id) => {
                if let Some(i) = at(id) {
                    d.customers[i].filter = true;
                }
            }
        }
    }
    for r in &local.rules {
        let Some(c) = at(r.customer).map(|i| &mut d.customers[i]) else {
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
        let Some(c) = at(a.customer).map(|i| &mut d.customers[i]) else {
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
                Ok(net) => Arc::make_mut(&mut c.entries).push(DesiredEntry {
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
            Scope::Global => Arc::make_mut(&mut d.global).push(de),
            Scope::Customer(id) => {
                if let Some(i) = at(id) {
                    Arc::make_mut(&mut d.customers[i].entries).push(de);
                }
            }
        }
    }
    d
}
