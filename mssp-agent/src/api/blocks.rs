//! `/v1/blocks`: the NOC's local source entries — list (both layers), add, delete.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
};
use mssp_common::{Scope, abi::SourceAction};
use mssp_core::{
    dataplane::backend::MapBackend,
    policy::cidr::{format_net, parse_cidr},
};
use mssp_wire::{
    Provenance,
    requests::{BlockAdd, BlockBatch, BlockDel, BlockFlush, CustomerRef, FindQuery, ScopeQuery},
    views::{BlockBatchResult, BlockFlushed, BlockRemoved, BlockView},
};
use time::OffsetDateTime;

use super::{ApiError, bad, blocking, not_changed, resolve, unknown_customer, user_name};
use crate::{
    Agent, audit,
    serve::Peer,
    state::AgentState,
    store::LocalEntry,
    views::{blocks_view, local_entry_view},
};

/// The list a request names, its customer resolved by id or name.
pub(crate) fn scope_of<B: MapBackend>(
    state: &AgentState<B>,
    customer: Option<&CustomerRef>,
    global: bool,
) -> Result<Option<Scope>, ApiError> {
    match (customer, global) {
        (Some(_), true) => Err(bad("give --customer ID or --global, not both")),
        (Some(c), false) => Ok(Some(Scope::Customer(resolve(state, c)?))),
        (None, true) => Ok(Some(Scope::Global)),
        (None, false) => Ok(None),
    }
}

pub(crate) async fn list<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<BlockView>>, ApiError> {
    blocking(&agent, move |state| {
        let filter = scope_of(state, q.customer.as_ref(), q.global)?;
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

/// A local entry from a request: its list resolved, every field checked.
fn entry_of<B: MapBackend>(
    state: &AgentState<B>,
    req: &BlockAdd,
    who: &str,
) -> Result<LocalEntry, ApiError> {
    let scope = scope_of(state, req.customer.as_ref(), req.global)?
        .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
    let net = parse_cidr(&req.prefix, true).map_err(bad)?;
    let action = parse_action(req.action.as_deref())?;
    let expires = expiry(req.ttl.as_deref())?;
    if let Scope::Customer(c) = scope
        && state.policy.customer(c).is_none()
    {
        return Err(unknown_customer(state, c));
    }
    Ok(LocalEntry {
        scope,
        prefix: format_net(&net),
        action,
        expires,
        comment: req.comment.clone(),
        by: Provenance::now(who),
    })
}

pub(crate) async fn add<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<BlockAdd>,
) -> Result<Json<BlockView>, ApiError> {
    let peer_user = peer.and_then(|Extension(p)| p.uid).map(user_name);
    let who = Provenance::operator(peer_user, req.user.as_deref());
    let target = serde_json::json!({"list": req.customer.as_ref().map_or("global".to_string(), |c| c.to_string()),
        "prefix": req.prefix, "action": req.action, "ttl": req.ttl});
    let a2 = agent.clone();
    let by = who.clone();
    let comment = req.comment.clone();
    let view = blocking(&agent, move |state| {
        let entry = entry_of(state, &req, &by)?;
        let (scope, net) = (entry.scope, entry.net());
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
        comment: comment.as_deref(),
        result: audit::outcome(&view.as_ref().map_err(|e| &e.1)),
    });
    Ok(Json(view?))
}

pub(crate) async fn del<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<BlockDel>,
) -> Result<Json<BlockRemoved>, ApiError> {
    let net = parse_cidr(&req.prefix, true).map_err(bad)?;
    let who = Provenance::operator(peer.and_then(|Extension(p)| p.uid).map(user_name), None);
    let list = req
        .customer
        .as_ref()
        .map_or("global".to_string(), |c| c.to_string());
    let r = blocking(&agent, move |state| {
        let scope = scope_of(state, req.customer.as_ref(), req.global)?
            .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
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
        target: serde_json::json!({"list": list, "prefix": format_net(&net)}),
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r
}

/// Several entries at once: every one checked first, then one change of the local layer
/// (all or nothing).
pub(crate) async fn batch<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<BlockBatch>,
) -> Result<Json<BlockBatchResult>, ApiError> {
    let claimed = req.entries.first().and_then(|e| e.user.clone());
    let who = Provenance::operator(
        peer.and_then(|Extension(p)| p.uid).map(user_name),
        claimed.as_deref(),
    );
    let n = req.entries.len();
    let by = who.clone();
    let a2 = agent.clone();
    let r = blocking(&agent, move |state| {
        let mut entries = Vec::with_capacity(req.entries.len());
        for (i, e) in req.entries.iter().enumerate() {
            let entry = entry_of(state, e, &by).map_err(|err| {
                ApiError(
                    err.0,
                    format!("entry {} ({}): {}; nothing changed", i + 1, e.prefix, err.1),
                )
            })?;
            entries.push(entry);
        }
        let mut local = state.local.clone();
        let added: std::collections::HashSet<(Scope, mssp_common::Net)> =
            entries.iter().map(|e| (e.scope, e.net())).collect();
        local
            .entries
            .retain(|e| !added.contains(&(e.scope, e.net())));
        local.entries.extend(entries);
        state
            .set_local(local, "block add -f")
            .map_err(not_changed)?;
        a2.expiry_changed.notify_one();
        Ok(BlockBatchResult { added: added.len() })
    })
    .await;
    audit::record(&audit::Event {
        who: &who,
        what: "block add -f",
        target: serde_json::json!({"entries": n}),
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r.map(Json)
}

/// Removes every local entry of one list.
pub(crate) async fn flush<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<BlockFlush>,
) -> Result<Json<BlockFlushed>, ApiError> {
    let who = Provenance::operator(
        peer.and_then(|Extension(p)| p.uid).map(user_name),
        req.user.as_deref(),
    );
    let list = req
        .customer
        .as_ref()
        .map_or("global".to_string(), |c| c.to_string());
    let r = blocking(&agent, move |state| {
        let scope = scope_of(state, req.customer.as_ref(), req.global)?
            .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
        let mut local = state.local.clone();
        let before = local.entries.len();
        local.entries.retain(|e| e.scope != scope);
        let removed = before - local.entries.len();
        if removed > 0 {
            state.set_local(local, "block flush").map_err(not_changed)?;
        }
        Ok(BlockFlushed {
            removed,
            scope: scope.label().to_string(),
        })
    })
    .await;
    audit::record(&audit::Event {
        who: &who,
        what: "block flush",
        target: serde_json::json!({"list": list}),
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r.map(Json)
}

/// Every entry of every layer and list that covers an address.
pub(crate) async fn find<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<FindQuery>,
) -> Result<Json<Vec<BlockView>>, ApiError> {
    let addr = parse_cidr(&q.ip, true).map_err(bad)?;
    blocking(&agent, move |state| {
        Ok(Json(
            blocks_view(state, None)
                .into_iter()
                .filter(|b| parse_cidr(&b.prefix, true).is_ok_and(|n| n.covers(&addr)))
                .collect(),
        ))
    })
    .await
}
