//! `/v1/rules`: the NOC's local rules — list (both layers, in evaluation order), add, delete.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
};
use mssp_common::{Layer, abi::MAX_RULES_PER_CUSTOMER};
use mssp_core::{
    dataplane::backend::MapBackend,
    policy::{rules, rules_doc::RuleDoc},
};
use mssp_wire::{
    Provenance,
    requests::{RuleAdd, RuleDel, RulesQuery},
    views::{RuleRemoved, RuleView},
};

use super::{ApiError, bad, blocking, not_changed, resolve, unknown_customer, user_name};
use crate::{Agent, audit, serve::Peer, store::LocalRule, views::rules_view};

pub(crate) async fn list<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<RulesQuery>,
) -> Result<Json<Vec<RuleView>>, ApiError> {
    blocking(&agent, move |state| {
        let customer = resolve(state, &q.customer)?;
        if state.policy.customer(customer).is_none() {
            return Err(unknown_customer(state, customer));
        }
        Ok(Json(rules_view(state, customer)))
    })
    .await
}

pub(crate) async fn add<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<RuleAdd>,
) -> Result<Json<RuleView>, ApiError> {
    let doc: RuleDoc = serde_path_to_error::deserialize(req.rule.clone()).map_err(|e| {
        let path = e.path().to_string();
        bad(format!("rule.{path}: {}", e.into_inner()))
    })?;
    let peer_user = peer.and_then(|Extension(p)| p.uid).map(user_name);
    let who = Provenance::operator(peer_user, req.user.as_deref());
    let (auditor, target) = (
        who.clone(),
        serde_json::json!({"customer": req.customer, "rule": req.rule}),
    );
    if doc.id >= rules::RESERVED_RULE_IDS {
        return Err(bad(format!(
            "rule.id: {} is reserved: ids from {} up are the auto and fleet layers'; use a smaller id",
            doc.id,
            rules::RESERVED_RULE_IDS
        )));
    }
    let r = blocking(&agent, move |state| {
        let customer = resolve(state, &req.customer)?;
        let Some(c) = state.policy.customer(customer) else {
            return Err(unknown_customer(state, customer));
        };
        let mut errors = Vec::new();
        if rules::rule(&doc, "rule", &c.prefixes, &mut errors).is_none() {
            return Err(bad(errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")));
        }
        let mut local = state.local.clone();
        local
            .rules
            .retain(|r| !(r.customer == customer && r.rule.id == doc.id));
        let central_ids: Vec<u32> = c.rules.iter().map(|r| r.id).collect();
        let local_count = local
            .rules
            .iter()
            .filter(|r| r.customer == customer)
            .count()
            + 1;
        let total = local_count
            + central_ids
                .iter()
                .filter(|id| {
                    !local
                        .rules
                        .iter()
                        .any(|r| r.customer == customer && r.rule.id == **id)
                        && **id != doc.id
                })
                .count();
        if total > MAX_RULES_PER_CUSTOMER as usize {
            return Err(ApiError(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "customer {customer} would have {total} rules; a customer holds at most {MAX_RULES_PER_CUSTOMER}"
                ),
            ));
        }
        let id = doc.id;
        local.rules.push(LocalRule {
            customer,
            rule: doc,
            by: Provenance::now(who),
        });
        state.set_local(local, "rule add").map_err(not_changed)?;
        rules_view(state, customer)
            .into_iter()
            .find(|r| r.layer == Layer::Local.name() && r.id == id)
            .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "rule vanished".into()))
    })
    .await;
    audit::record(&audit::Event {
        who: &auditor,
        what: "rule add",
        target,
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r.map(Json)
}

pub(crate) async fn del<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<RuleDel>,
) -> Result<Json<RuleRemoved>, ApiError> {
    let who = Provenance::operator(peer.and_then(|Extension(p)| p.uid).map(user_name), None);
    let target = serde_json::json!({"customer": req.customer, "rule": req.id});
    let r = blocking(&agent, move |state| {
        let customer = resolve(state, &req.customer)?;
        let Some(c) = state.policy.customer(customer) else {
            return Err(unknown_customer(state, customer));
        };
        let mut local = state.local.clone();
        let before = local.rules.len();
        local.rules.retain(|r| !(r.customer == customer && r.rule.id == req.id));
        if local.rules.len() == before {
            let msg = if c.rules.iter().any(|r| r.id == req.id) {
                format!(
                    "rule {} of customer {} comes from the central policy (version {}); the CLI edits the local layer only — \
                     override it with a local rule of the same id",
                    req.id,
                    customer,
                    state.central_version()
                )
            } else {
                format!("customer {customer} has no local rule {}", req.id)
            };
            return Err(ApiError(StatusCode::NOT_FOUND, msg));
        }
        state.set_local(local, "rule del").map_err(not_changed)?;
        Ok(Json(RuleRemoved {
            removed: req.id,
            customer,
        }))
    })
    .await;
    audit::record(&audit::Event {
        who: &who,
        what: "rule del",
        target,
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r
}
