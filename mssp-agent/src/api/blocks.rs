//! `/v1/blocks`: the NOC's local source entries — list (both layers), add, delete.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
};
use mssp_common::{Scope, abi::SourceAction};
use mssp_core::{dataplane::backend::MapBackend, policy::cidr::{format_net, parse_cidr}};
use mssp_wire::{
    Provenance,
    requests::{BlockAdd, BlockDel, ScopeQuery},
    views::{BlockRemoved, BlockView},
};
use time::OffsetDateTime;

use super::{ApiError, bad, blocking, not_changed, unknown_customer, user_name};
use crate::{
    Agent, audit,
    serve::Peer,
    store::LocalEntry,
    views::{blocks_view, local_entry_view},
};

pub(crate) fn scope_of(customer: Option<u32>, global: bool) -> Result<Option<Scope>, ApiError> {
    match (customer, global) {
        (Some(_), true) => Err(bad("give --customer ID or --global, not both")),
        (Some(c), false) => Ok(Some(Scope::Customer(c))),
        (None, true) => Ok(Some(Scope::Global)),
        (None, false) => Ok(None),
    }
}

pub(crate) async fn list<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<BlockView>>, ApiError> {
    let filter = scope_of(q.customer, q.global)?;
    blocking(&agent, move |state| {
        if let Some(Scope::Customer(c)) = filter
            && state.policy.customer(c).is_none()
            && !state
                .local
                .entries
                .iter()
                .any(|l| l.scope == Scope::Customer(c))
        {
            return Err(unknown_customer(state, c));
        }
        Ok(Json(blocks_view(state, filter)))
    })
    .await
}

fn parse_action(a: Option<&str>) -> Result<SourceAction, ApiError> {
    match a.unwrap_or("drop") {
        "drop" => Ok(SourceAction::Drop),
        "allow" => Ok(SourceAction::Allow),
        "monitor" => Ok(SourceAction::Monitor),
        other => Err(bad(format!(
            "action {other:?} is not one of drop, allow, monitor"
        ))),
    }
}

/// `ttl` as an expiry from now: a positive duration that still lands on a representable
/// date.
pub(crate) fn expiry(ttl: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    let Some(t) = ttl else { return Ok(None) };
    let d = humantime::parse_duration(t).map_err(|e| {
        bad(format!(
            "ttl {t:?} is not a duration ({e}); write e.g. 10m, 2h, 1d"
        ))
    })?;
    if d.is_zero() {
        return Err(bad(format!("ttl {t:?} is zero; give a positive duration")));
    }
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| OffsetDateTime::now_utc().checked_add(d))
        .filter(|t| t.year() <= 9999)
        .map(Some)
        .ok_or_else(|| {
            bad(format!(
                "ttl {t:?} ends after the year 9999; give a shorter duration (e.g. 365d), or none for a permanent entry"
            ))
        })
}

pub(crate) async fn add<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<BlockAdd>,
) -> Result<Json<BlockView>, ApiError> {
    let scope = scope_of(req.customer, req.global)?
        .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
    let net = parse_cidr(&req.prefix, true).map_err(bad)?;
    let action = parse_action(req.action.as_deref())?;
    let expires = expiry(req.ttl.as_deref())?;
    let peer_user = peer.and_then(|Extension(p)| p.uid).map(user_name);
    let entry = LocalEntry {
        scope,
        prefix: format_net(&net),
        action,
        expires,
        comment: req.comment.clone(),
        by: Provenance::now(Provenance::operator(peer_user, req.user.as_deref())),
    };
    let (who, target) = (
        entry.by.who.clone(),
        serde_json::json!({"scope": scope.label().to_string(), "prefix": entry.prefix,
            "action": action.name(), "expires": expires.map(crate::views::ts)}),
    );
    let a2 = agent.clone();
    let view = blocking(&agent, move |state| {
        if let Scope::Customer(c) = scope
            && state.policy.customer(c).is_none()
        {
            return Err(unknown_customer(state, c));
        }
        let mut local = state.local.clone();
        local
            .entries
            .retain(|e| !(e.scope == scope && e.net() == net));
        local.entries.push(entry.clone());
        state.set_local(local, "block add").map_err(not_changed)?;
        a2.expiry_changed.notify_one();
        Ok(local_entry_view(state, &entry))
    })
    .await;
    audit::record(&audit::Event {
        who: &who,
        what: "block add",
        target,
        comment: req.comment.as_deref(),
        result: audit::outcome(&view.as_ref().map_err(|e| &e.1)),
    });
    Ok(Json(view?))
}

pub(crate) async fn del<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<BlockDel>,
) -> Result<Json<BlockRemoved>, ApiError> {
    let scope = scope_of(req.customer, req.global)?
        .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
    let net = parse_cidr(&req.prefix, true).map_err(bad)?;
    let who = Provenance::operator(peer.and_then(|Extension(p)| p.uid).map(user_name), None);
    let r = blocking(&agent, move |state| {
        let mut local = state.local.clone();
        let before = local.entries.len();
        local.entries.retain(|e| !(e.scope == scope && e.net() == net));
        if local.entries.len() == before {
            let central = match scope {
                Scope::Global => state.policy.global.iter().any(|s| s.net == net),
                Scope::Customer(c) => {
                    if state.policy.customer(c).is_none() {
                        return Err(unknown_customer(state, c));
                    }
                    state.policy.customer(c).is_some_and(|c| c.sources.iter().any(|s| s.net == net))
                }
            };
            let msg = if central {
                format!(
                    "{} in {} comes from the central policy (version {}); the CLI edits the local layer only — \
                     ask the controller to remove it, or override it locally with `mssp block add {} {} --action allow`",
                    format_net(&net),
                    scope.label(),
                    state.central_version(),
                    format_net(&net),
                    match scope {
                        Scope::Global => "--global".to_string(),
                        Scope::Customer(c) => format!("--customer {c}"),
                    }
                )
            } else {
                format!("no local entry {} in {}", format_net(&net), scope.label())
            };
            return Err(ApiError(StatusCode::NOT_FOUND, msg));
        }
        state.set_local(local, "block del").map_err(not_changed)?;
        Ok(Json(BlockRemoved {
            removed: format_net(&net),
            scope: scope.label().to_string(),
        }))
    })
    .await;
    audit::record(&audit::Event {
        who: &who,
        what: "block del",
        target: serde_json::json!({"scope": scope.label().to_string(), "prefix": format_net(&net)}),
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r
}
