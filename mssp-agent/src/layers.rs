//! The union of the policy layers the agent holds: the central policy (pushed) and the NOC's
//! local layer, into the one desired state the publisher makes true.

use mssp_common::{Layer, Scope};
use mssp_core::{
    dataplane::{Desired, DesiredEntry, DesiredRule},
    policy::{Policy, rules},
};

use crate::store::LocalFile;

/// Local entries join the central ones; where both name the same prefix in the same list,
/// the local one is enforced (see [`Desired::effective`]). Local entries and rules of a
/// customer the central policy does not have are kept but not enforced.
pub fn desired(policy: &Policy, local: &LocalFile) -> Desired {
    let mut d = Desired::from_policy(policy);
    for r in &local.rules {
        let Some(c) = d.customers.iter_mut().find(|c| c.id == r.customer) else {
            continue;
        };
        let mut errors = Vec::new();
        if let Some(spec) = rules::rule(&r.rule, "rule", &c.prefixes, &mut errors) {
            c.rules.push(DesiredRule {
                spec,
                layer: Layer::Local,
            });
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
