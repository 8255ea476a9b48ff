//! The local API on the agent's Unix socket (HTTP/1.1 + JSON, so `curl --unix-socket` works
//! too): status, stats, the policy in force, and the NOC's local layer (blocks, rules).
//! Requests and replies are the [`mssp_wire`] types. Every handler that touches the maps
//! runs on the blocking pool under the agent lock.

mod admin;
mod attacks;
mod blocks;
mod explain;
mod filter;
mod rules;

use std::{os::unix::fs::PermissionsExt, sync::Arc};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use mssp_core::dataplane::backend::MapBackend;
use mssp_wire::{
    ErrorBody,
    requests::{PolicyQuery, StatsQuery},
    views::{PolicyVersion, StatsView, StatusView},
};
use tokio::net::UnixListener;

use crate::{
    Agent,
    config::Config,
    state::AgentState,
    views::{policy_view, stats_view, status_view, unknown_customer_message},
};

/// An API error: status and a message naming the bad value.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody::new(self.1))).into_response()
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// A change that was not made: the map or state-file error, and that nothing changed.
pub(crate) fn not_changed(e: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::INSUFFICIENT_STORAGE,
        format!("nothing changed: {e}"),
    )
}

pub(crate) fn unknown_customer<B: MapBackend>(state: &AgentState<B>, id: u32) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, unknown_customer_message(state, id))
}

/// A customer named by id or by name, as the central policy knows it: its id. A number
/// is an id even when no customer has it yet (callers decide whether that is an error).
pub(crate) fn resolve<B: MapBackend>(
    state: &AgentState<B>,
    r: &mssp_wire::requests::CustomerRef,
) -> Result<u32, ApiError> {
    if let Some(id) = r.as_id() {
        return Ok(id);
    }
    let name = r.to_string();
    let matching: Vec<u32> = state
        .policy
        .customers
        .iter()
        .filter(|c| c.name.as_deref() == Some(name.as_str()))
        .map(|c| c.id)
        .collect();
    match matching.as_slice() {
        [id] => Ok(*id),
        [] => {
            let mut names: Vec<&str> = state
                .policy
                .customers
                .iter()
                .filter_map(|c| c.name.as_deref())
                .collect();
            names.sort_unstable();
            names.truncate(12);
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no customer is named {name:?}; the central policy (version {}) names {}",
                    state.central_version(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ))
        }
        ids => Err(bad(format!(
            "{} customers are named {name:?} (ids {}); give the id",
            ids.len(),
            ids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Runs `f` under the agent lock on the blocking pool.
pub(crate) async fn blocking<B, T>(
    agent: &Arc<Agent<B>>,
    f: impl FnOnce(&mut AgentState<B>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError>
where
    B: MapBackend + Send + 'static,
    T: Send + 'static,
{
    let a = agent.clone();
    tokio::task::spawn_blocking(move || f(&mut a.lock()))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("agent task failed: {e}"),
            )
        })?
}

/// The user name of a uid, or `uid N`.
pub(crate) fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid_r with a buffer we own.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 1024];
        let mut out = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) == 0
            && !out.is_null()
        {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    format!("uid {uid}")
}

pub fn router<B: MapBackend + Send + 'static>(agent: Arc<Agent<B>>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<B>))
        .route("/v1/stats", get(stats::<B>))
        .route("/v1/policy", get(policy::<B>))
        .route(
            "/v1/policy/reset-version",
            axum::routing::post(admin::reset_version::<B>),
        )
        .route("/v1/reload", axum::routing::post(admin::reload::<B>))
        .route("/v1/policy/check", axum::routing::post(admin::check::<B>))
        .route("/v1/explain", axum::routing::post(explain::explain::<B>))
        .route("/v1/simulate", axum::routing::post(explain::simulate::<B>))
        .route(
            "/v1/blocks",
            get(blocks::list::<B>)
                .post(blocks::add::<B>)
                .delete(blocks::del::<B>),
        )
        .route("/v1/blocks/batch", axum::routing::post(blocks::batch::<B>))
        .route("/v1/blocks/flush", axum::routing::post(blocks::flush::<B>))
        .route("/v1/blocks/find", get(blocks::find::<B>))
        .route("/v1/attacks", get(attacks::list::<B>))
        .route("/v1/attacks/{id}", get(attacks::show::<B>))
        .route("/v1/monitor", get(attacks::monitor::<B>))
        .route("/v1/top", get(attacks::top::<B>))
        .route(
            "/v1/detection",
            get(attacks::get_detection::<B>)
                .put(attacks::set_detection::<B>)
                .delete(attacks::clear_detection::<B>),
        )
        .route(
            "/v1/filter",
            get(filter::list::<B>)
                .post(filter::add::<B>)
                .delete(filter::del::<B>),
        )
        .route("/v1/filter/test", get(filter::test::<B>))
        .route("/v1/filter/stats", get(filter::stats::<B>))
        .route(
            "/v1/rules",
            get(rules::list::<B>)
                .post(rules::add::<B>)
                .delete(rules::del::<B>),
        )
        .with_state(agent)
}

/// Binds the socket (refusing to steal it from a live agent) and sets its mode and group.
pub fn bind(cfg: &Config) -> Result<UnixListener, String> {
    let path = cfg.socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!("another agent is serving {}", path.display()));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let mode = cfg.socket_mode_bits()?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    if let Some(group) = &cfg.socket_group {
        let gid =
            group_id(group).ok_or_else(|| format!("socket_group {group:?} does not exist"))?;
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        // SAFETY: chown on a path we just created.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            return Err(format!(
                "cannot give {} to group {group}: {} (the agent needs CAP_CHOWN or membership of the group)",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(listener)
}

fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        None
    } else {
        Some(unsafe { (*g).gr_gid })
    }
}

async fn status<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
) -> Result<Json<StatusView>, ApiError> {
    let a = agent.clone();
    blocking(&agent, move |state| Ok(Json(status_view(&a, state)))).await
}

async fn stats<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<StatsView>, ApiError> {
    blocking(&agent, move |state| {
        let only = match &q.customer {
            Some(r) => Some(resolve(state, r)?),
            None => None,
        };
        if let Some(c) = only
            && state.dp.slot(c).is_none()
        {
            return Err(unknown_customer(state, c));
        }
        stats_view(state, only)
            .map(Json)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
}

async fn policy<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Query(q): Query<PolicyQuery>,
) -> Result<Json<PolicyVersion>, ApiError> {
    blocking(&agent, move |state| {
        policy_view(state, q.full)
            .map(Json)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await
}
