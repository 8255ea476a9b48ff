//! `/v1/filter`: content filtering. The lists in force per customer (central and local
//! names), the NOC's local names (add, del), which rule decides a name for a customer and
//! why (test), and what the inspector does (stats).

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
};
use mssp_core::{dataplane::backend::MapBackend, policy::filtering::normalize_domain};
use mssp_filter::table::FilterTable;
use mssp_wire::{
    Provenance,
    requests::{FilterEdit, FilterQuery},
};
use serde_json::{Value, json};

use super::{ApiError, bad, blocking, not_changed, resolve, unknown_customer, user_name};
use crate::{Agent, audit, serve::Peer, state::AgentState, store::LocalFilterName};

/// The scope a request names: `Some(id)` for a customer, `None` for the global list.
fn scope<B: MapBackend>(
    state: &AgentState<B>,
    customer: &Option<mssp_wire::requests::CustomerRef>,
    global: bool,
) -> Result<Option<u32>, ApiError> {
    match (customer, global) {
        (Some(_), true) => Err(bad("give --customer ID or --global, not both")),
        (None, false) => Err(bad(
            "give --customer ID (or --global for the ISP-wide list)",
        )),
        (Some(r), false) => {
            let id = resolve(state, r)?;
            if state.policy.customer(id).is_none() {
                return Err(unknown_customer(state, id));
            }
            Ok(Some(id))
        }
        (None, true) => Ok(None),
    }
}

fn list_view<B: MapBackend>(state: &AgentState<B>, only: Option<Option<u32>>) -> Value {
    let doc = crate::filtering::table_doc(&state.policy, &state.local);
    let local_of = |c: Option<u32>| -> Vec<Value> {
        state
            .local
            .filter_names
            .iter()
            .filter(|n| n.customer == c)
            .map(|n| json!({"name": n.name, "who": n.by.who, "added": n.by.at.to_string()}))
            .collect()
    };
    let list = |f: Option<&mssp_core::policy::filtering::Filtering>| match f {
        None => json!(null),
        Some(f) => json!({
            "names": f.block_domains.len(),
            "block_domains": f.block_domains.iter().take(1000).collect::<Vec<_>>(),
            "action": f.action.name(),
            "sinkhole": {"ipv4": f.sinkhole_v4, "ipv6": f.sinkhole_v6},
            "quic": if f.block_quic { "block" } else { "pass" },
        }),
    };
    let mut customers = Vec::new();
    for c in &doc.customers {
        if only.is_some_and(|o| o != Some(c.id)) {
            continue;
        }
        if c.filtering.is_none() && only.is_none() {
            continue;
        }
        customers.push(json!({
            "id": c.id,
            "name": c.name,
            "filtering": list(c.filtering.as_ref()),
            "local": local_of(Some(c.id)),
        }));
    }
    let global = if only.is_none() || only == Some(None) {
        json!({"filtering": list(doc.global.as_ref()), "local": local_of(None)})
    } else {
        json!(null)
    };
    json!({"global": global, "customers": customers})
}

pub(crate) async fn list<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<FilterQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(&agent, move |state| {
        let only = match (&q.customer, q.global) {
            (None, false) => None,
            (c, g) => Some(scope(state, c, g)?),
        };
        Ok(Json(list_view(state, only)))
    })
    .await
}

/// Which rule decides `name` for a customer, and why.
pub(crate) async fn test<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<FilterQuery>,
) -> Result<Json<Value>, ApiError> {
    let raw = q.name.clone().ok_or_else(|| bad("give the name to test"))?;
    let name = normalize_domain(&raw).map_err(|e| bad(format!("name {raw:?} {e}")))?;
    blocking(&agent, move |state| {
        let who = match (&q.customer, q.global) {
            (None, false) => None,
            (c, g) => scope(state, c, g)?,
        };
        let table = FilterTable::from_doc(&crate::filtering::table_doc(&state.policy, &state.local))
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let d = table.decide_for(who, &name);
        let why = match &d.blocked {
            None => format!(
                "allowed: no list {} names {name} or a name it is under",
                if who.is_some() { "of this customer, nor the global one," } else { "(global)" }
            ),
            Some(b) => format!(
                "blocked by {:?} in the {} list ({} layer): {name} {}; DNS gets {}, TLS and HTTP a reset",
                b.rule,
                match b.list {
                    mssp_filter::table::List::Customer => "customer's",
                    mssp_filter::table::List::Global => "global",
                },
                b.layer,
                if b.rule == name { "is listed" } else { "is under it" },
                b.action.name()
            ),
        };
        Ok(Json(json!({
            "name": name,
            "customer": who,
            "customer_name": d.customer_name,
            "verdict": if d.blocked.is_some() { "block" } else { "allow" },
            "rule": d.blocked.as_ref().map(|b| b.rule.clone()),
            "list": d.blocked.as_ref().map(|b| b.list),
            "layer": d.blocked.as_ref().map(|b| b.layer.clone()),
            "action": d.blocked.as_ref().map(|b| b.action.name()),
            "why": why,
        })))
    })
    .await
}

async fn edit<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    peer: Option<Extension<Peer>>,
    req: FilterEdit,
    add: bool,
) -> Result<Json<Value>, ApiError> {
    if req.names.is_empty() {
        return Err(bad("give at least one name"));
    }
    let mut names = Vec::with_capacity(req.names.len());
    for n in &req.names {
        names.push(normalize_domain(n).map_err(|e| bad(format!("name {n:?} {e}")))?);
    }
    let peer_user = peer.and_then(|Extension(p)| p.uid).map(user_name);
    let who = Provenance::operator(peer_user, req.user.as_deref());
    let what = if add { "filter add" } else { "filter del" };
    let target = json!({"customer": req.customer, "global": req.global, "names": names});
    let who2 = who.clone();
    let r = blocking(&agent, move |state| {
        let sc = scope(state, &req.customer, req.global)?;
        let mut local = state.local.clone();
        for n in &names {
            let present = local
                .filter_names
                .iter()
                .position(|x| x.customer == sc && &x.name == n);
            match (add, present) {
                (true, Some(_)) => {}
                (true, None) => local.filter_names.push(LocalFilterName {
                    customer: sc,
                    name: n.clone(),
                    by: Provenance::now(who2.clone()),
                }),
                (false, Some(i)) => {
                    local.filter_names.remove(i);
                }
                (false, None) => {
                    let central = match sc {
                        Some(id) => state.policy.customer(id).and_then(|c| c.filtering.as_ref()),
                        None => state.policy.global_filtering.as_ref(),
                    };
                    let hint = if central.is_some_and(|f| f.block_domains.binary_search(n).is_ok())
                    {
                        "it is in the central policy's list; only the centre can remove it"
                    } else {
                        "`mssp filter list` shows the local names"
                    };
                    return Err(ApiError(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{n} is not in the local layer's list here; nothing changed ({hint})"
                        ),
                    ));
                }
            }
        }
        state.set_local(local, what).map_err(not_changed)?;
        Ok(list_view(state, Some(sc)))
    })
    .await;
    audit::record(&audit::Event {
        who: &who,
        what,
        target,
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r.map(Json)
}

pub(crate) async fn add<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<FilterEdit>,
) -> Result<Json<Value>, ApiError> {
    edit(agent, peer, req, true).await
}

pub(crate) async fn del<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<FilterEdit>,
) -> Result<Json<Value>, ApiError> {
    edit(agent, peer, req, false).await
}

/// The inspector: process, sockets, fail-open state, counters, top names, recent decisions.
pub(crate) async fn stats<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
) -> Result<Json<Value>, ApiError> {
    let a = agent.clone();
    blocking(&agent, move |state| {
        let status = a.filtering.status();
        let report = crate::filtering::read_report(&state.store.dir);
        Ok(Json(json!({"inspector": status, "report": report})))
    })
    .await
}
