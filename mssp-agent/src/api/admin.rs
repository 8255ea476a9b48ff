//! `/v1/reload` and `/v1/policy/reset-version`: operations on the agent itself.

use std::sync::Arc;

use axum::{Extension, Json, extract::State, http::StatusCode};
use mssp_core::dataplane::backend::MapBackend;
use mssp_wire::{
    Provenance,
    requests::ResetVersion,
    views::{ReloadResult, VersionReset},
};

use super::{ApiError, bad, blocking, user_name};
use crate::{Agent, audit, serve::Peer};

/// Re-reads the config, the policy file and the certificates; applies wholly or not at
/// all, and says which.
pub(crate) async fn reload<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
) -> Result<Json<ReloadResult>, ApiError> {
    let who = Provenance::operator(peer.and_then(|Extension(p)| p.uid).map(user_name), None);
    let a = agent.clone();
    let r = tokio::task::spawn_blocking(move || a.reload(&who))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload task: {e}"),
            )
        })?;
    agent.expiry_changed.notify_one();
    match r {
        Ok(message) => Ok(Json(ReloadResult { message })),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload failed: {e}"),
        )),
    }
}

pub(crate) async fn reset_version<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    peer: Option<Extension<Peer>>,
    Json(req): Json<ResetVersion>,
) -> Result<Json<VersionReset>, ApiError> {
    if !req.confirm {
        return Err(bad(
            "resetting the central version needs confirmation (--yes): the controller's next push must then exceed the new version",
        ));
    }
    let who = Provenance::operator(
        peer.and_then(|Extension(p)| p.uid).map(user_name),
        req.user.as_deref(),
    );
    let to = req.to;
    let auditor = who.clone();
    let r = blocking(&agent, move |state| {
        let Some(mut meta) = state.central.clone() else {
            return Err(bad("no central policy is held; there is no version to reset"));
        };
        let from = meta.version;
        if to >= from {
            return Err(bad(format!(
                "the central layer is at version {from}; reset it to a lower one (pushes above {from} are accepted already)"
            )));
        }
        meta.version = to;
        let mut doc = state
            .central_doc()
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("nothing changed: {e}")))?;
        doc.version = to;
        state
            .store
            .save_central(&meta, &doc)
            .map_err(|e| ApiError(StatusCode::INSUFFICIENT_STORAGE, format!("nothing changed: {e}")))?;
        state.policy.doc = doc;
        state.policy.slim_doc();
        state.policy.version = to;
        state.central = Some(meta);
        Ok(VersionReset { from, to })
    })
    .await;
    audit::record(&audit::Event {
        who: &auditor,
        what: "policy reset-version",
        target: serde_json::json!({"to": to}),
        comment: None,
        result: audit::outcome(&r.as_ref().map_err(|e| &e.1)),
    });
    r.map(Json)
}

/// Whether this agent would apply a document (its capacities, and its other layers counted
/// in), and what it would change. Nothing is applied.
pub(crate) async fn check<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    body: axum::body::Bytes,
) -> Result<Json<mssp_wire::views::PolicyCheck>, ApiError> {
    let a = agent.clone();
    let r = tokio::task::spawn_blocking(move || crate::push::check_document(&a, &body))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("check task: {e}"),
            )
        })?;
    Ok(Json(r))
}
