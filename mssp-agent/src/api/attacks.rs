//! `/v1/attacks`, `/v1/monitor`, `/v1/top`, `/v1/detection`: the attacks this edge saw, the
//! live sample stream, what flows now, and the detection settings (with the NOC's local
//! overrides).

use std::{convert::Infallible, sync::Arc};

use axum::{
    Extension, Json,
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use mssp_common::{Reason, Verdict};
use mssp_core::{
    dataplane::backend::MapBackend,
    policy::detection::{DetectionDoc, detection},
};
use mssp_wire::{
    Provenance,
    attacks::{Attack, AttackList, AttackState, DetectionView, TopView},
    requests::{
        AttacksQuery, DetectionClear, DetectionQuery, DetectionSet, MonitorQuery, TopQuery,
    },
};

use super::{ApiError, bad, blocking, not_changed, resolve, unknown_customer, user_name};
use crate::{
    Agent, audit, ips::settings::effective_detection, live as views, serve::Peer,
    store::LocalDetectionDoc,
};

/// The live dropped-packet counts of active attacks are refreshed by the detector each
/// second; ended ones keep their final count.
pub(crate) async fn list<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<AttacksQuery>,
) -> Result<Json<AttackList>, ApiError> {
    let customer = match &q.customer {
        Some(r) => {
            let r = r.clone();
            Some(blocking(&agent, move |state| resolve(state, &r)).await?)
        }
        None => None,
    };
    let attacks: Vec<Attack> = agent
        .ips
        .lock()
        .engine
        .attacks()
        .into_iter()
        .filter(|a| q.all || a.state == AttackState::Active)
        .filter(|a| customer.is_none_or(|c| c == a.customer))
        .collect();
    Ok(Json(AttackList { attacks }))
}

pub(crate) async fn show<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Path(id): Path<String>,
) -> Result<Json<Attack>, ApiError> {
    let all = agent.ips.lock().engine.attacks();
    match all.iter().find(|a| a.id == id) {
        Some(a) => Ok(Json(a.clone())),
        None => {
            let mut recent: Vec<&str> = all.iter().take(5).map(|a| a.id.as_str()).collect();
            if recent.is_empty() {
                recent.push("none recorded");
            }
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no attack {id:?}; the most recent are {}",
                    recent.join(", ")
                ),
            ))
        }
    }
}

/// A verdict or reason name, as `--reason` takes it.
type Keep = Arc<dyn Fn(Verdict, Reason) -> bool + Send + Sync>;

fn reason_filter(r: &str) -> Result<Keep, ApiError> {
    if let Some(v) = Verdict::ALL.into_iter().find(|v| v.name() == r) {
        return Ok(Arc::new(move |x, _| x == v));
    }
    if let Some(reason) = Reason::ALL.into_iter().find(|x| x.name() == r) {
        return Ok(Arc::new(move |_, x| x == reason));
    }
    let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
    Err(bad(format!(
        "--reason {r:?} is neither a verdict (drop, pass) nor a reason ({})",
        names.join(", ")
    )))
}

/// A stream of sampled packets, one JSON object per line, until the client goes away.
pub(crate) async fn monitor<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<MonitorQuery>,
) -> Result<Response, ApiError> {
    let customer = match &q.customer {
        Some(r) => {
            let r = r.clone();
            Some(blocking(&agent, move |state| resolve(state, &r)).await?)
        }
        None => None,
    };
    let keep: Keep = match &q.reason {
        Some(r) => reason_filter(r)?,
        None => Arc::new(|_, _| true),
    };
    if !agent.ips.running.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent reads no samples (it runs over in-memory maps)".into(),
        ));
    }
    let rx = agent.ips.monitor.subscribe();
    let stream =
        futures_util::stream::unfold((agent, rx, keep), move |(agent, mut rx, keep)| async move {
            loop {
                let first = match rx.recv().await {
                    Ok(o) => o,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let line = format!("{{\"lagged\": {n}}}\n");
                        return Some((
                            Ok::<Bytes, Infallible>(Bytes::from(line)),
                            (agent, rx, keep),
                        ));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                let mut batch = vec![first];
                while batch.len() < 512 {
                    match rx.try_recv() {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
                batch.retain(|o| {
                    customer.is_none_or(|c| c == o.customer) && keep(o.verdict, o.reason)
                });
                if batch.is_empty() {
                    continue;
                }
                let a = agent.clone();
                let text = tokio::task::spawn_blocking(move || {
                    let state = a.lock();
                    let mut out = String::new();
                    for o in &batch {
                        if let Ok(line) = serde_json::to_string(&views::sampled(&state, o)) {
                            out.push_str(&line);
                            out.push('\n');
                        }
                    }
                    out
                })
                .await
                .unwrap_or_default();
                return Some((Ok(Bytes::from(text)), (agent, rx, keep)));
            }
        });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

pub(crate) async fn top<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<TopQuery>,
) -> Result<Json<TopView>, ApiError> {
    let r = q.customer.clone();
    let (customer, names) = blocking(&agent, move |state| {
        let c = match &r {
            Some(r) => {
                let c = resolve(state, r)?;
                if state.policy.customer(c).is_none() {
                    return Err(unknown_customer(state, c));
                }
                Some(c)
            }
            None => None,
        };
        Ok((c, state.detection.names.clone()))
    })
    .await?;
    let ips = agent.ips.lock();
    Ok(Json(views::top(&ips, customer, &names)))
}

pub(crate) async fn get_detection<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<DetectionQuery>,
) -> Result<Json<Vec<DetectionView>>, ApiError> {
    blocking(&agent, move |state| {
        let only = match &q.customer {
            Some(r) => {
                let c = resolve(state, r)?;
                if state.policy.customer(c).is_none() {
                    return Err(unknown_customer(state, c));
                }
                Some(c)
            }
            None => None,
        };
        let mut out = Vec::new();
        for c in state
            .policy
            .customers
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.id))
        {
            let local = state.local.detection.customers.get(&c.id);
            let (source, who) = if let Some(l) = local {
                ("local", Some(l.by.who.clone()))
            } else if c.detection.is_some() {
                ("central", None)
            } else if let Some(l) = &state.local.detection.default {
                ("local default", Some(l.by.who.clone()))
            } else if state.policy.detection.is_some() {
                ("central default", None)
            } else {
                ("none", None)
            };
            let d = effective_detection(&state.policy, &state.local, c.id);
            out.push(DetectionView {
                customer: c.id,
                name: c.name.clone(),
                source: source.into(),
                detection: match d {
                    Some(d) => serde_json::to_value(d.to_doc()).unwrap_or_default(),
                    None => serde_json::json!({"mode": "off"}),
                },
                who,
            });
        }
        Ok(Json(out))
    })
    .await
}

pub(crate) async fn set_detection<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<DetectionSet>,
) -> Result<Json<Vec<DetectionView>>, ApiError> {
    let doc: DetectionDoc =
        serde_path_to_error::deserialize(req.detection.clone()).map_err(|e| {
            let path = e.path().to_string();
            bad(format!("detection.{path}: {}", e.into_inner()))
        })?;
    let mut errors = Vec::new();
    if detection(&doc, "detection", &mut errors).is_none() {
        return Err(bad(errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")));
    }
    let peer_user = peer.and_then(|Extension(p)| p.uid).map(user_name);
    let who = Provenance::operator(peer_user, req.user.as_deref());
    let target = serde_json::json!({"customer": req.customer, "default": req.default, "detection": req.detection});
    let a2 = agent.clone();
    let who2 = who.clone();
    let r = blocking(&agent, move |state| {
        let mut local = state.local.clone();
        let entry = LocalDetectionDoc {
            detection: doc,
            by: Provenance::now(who2),
        };
        let customer = match (&req.customer, req.default) {
            (Some(_), true) => return Err(bad("give --customer ID or --default, not both")),
            (None, false) => {
                return Err(bad(
                    "give --customer ID (or --default for every customer that sets none)",
                ));
            }
            (Some(r), false) => {
                let c = resolve(state, r)?;
                if state.policy.customer(c).is_none() {
                    return Err(unknown_customer(state, c));
                }
                local.detection.customers.insert(c, entry);
                Some(c)
            }
            (None, true) => {
                local.detection.default = Some(entry);
                None
            }
        };
        state
            .set_local(local, "detection set")
            .map_err(not_changed)?;
        Ok(customer)
    })
    .await;
    audited(a2, &who, "detection set", target, r).await
}

pub(crate) async fn clear_detection<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<DetectionClear>,
) -> Result<Json<Vec<DetectionView>>, ApiError> {
    let peer_user = peer.and_then(|Extension(p)| p.uid).map(user_name);
    let who = Provenance::operator(peer_user, req.user.as_deref());
    let target = serde_json::json!({"customer": req.customer, "default": req.default});
    let a2 = agent.clone();
    let r = blocking(&agent, move |state| {
        let mut local = state.local.clone();
        let customer = match (&req.customer, req.default) {
            (Some(_), true) => return Err(bad("give --customer ID or --default, not both")),
            (None, false) => return Err(bad("give --customer ID or --default")),
            (Some(r), false) => {
                let c = resolve(state, r)?;
                if local.detection.customers.remove(&c).is_none() {
                    return Err(ApiError(
                        StatusCode::NOT_FOUND,
                        format!("customer {c} has no local detection settings; `mssp detection show --customer {c}` says where its settings come from"),
                    ));
                }
                Some(c)
            }
            (None, true) => {
                if local.detection.default.take().is_none() {
                    return Err(ApiError(StatusCode::NOT_FOUND, "no local default detection settings to clear".into()));
                }
                None
            }
        };
        state.set_local(local, "detection clear").map_err(not_changed)?;
        Ok(customer)
    })
    .await;
    audited(a2, &who, "detection clear", target, r).await
}

/// A detection edit's audit line, then the settings now in force (of that customer, or all).
async fn audited<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    who: &str,
    what: &str,
    target: serde_json::Value,
    r: Result<Option<u32>, ApiError>,
) -> Result<Json<Vec<DetectionView>>, ApiError> {
    audit::record(&audit::Event {
        who,
        what,
        target,
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    let customer = r?;
    get_detection(
        State(agent),
        Query(DetectionQuery {
            customer: customer.map(mssp_wire::requests::CustomerRef::Id),
        }),
    )
    .await
}
