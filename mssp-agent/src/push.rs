//! The central controller's push endpoint: HTTPS with mutual TLS (rustls), JSON replies.
//!
//! * `PUT /v1/policy` — a full policy document replacing the central layer. The whole
//!   document is validated before any map is touched (400 names the field, its value and
//!   the fix); a version not above the one in force is refused (409 with the current
//!   version); 200 is sent only once the data plane enforces the new policy; a failed apply
//!   leaves the previous policy wholly in force (500, or 507 when a map is full).
//! * `GET /v1/policy` — `{"version", "digest", "applied_at", "source"}`.
//! * `GET /v1/status` — what `mssp status --json` shows: interfaces, attach modes, map fill,
//!   versions.
//!
//! Every connection must present a client certificate signed by `client_ca`; the TLS
//! handshake fails otherwise, before any request is read. Pushes are serialised; bodies are
//! limited to `push_max_bytes`; a client that takes longer than `push_timeout` for the
//! handshake or its request is cut off (408). The local layer is never touched here.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Extension, Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::StreamExt;
use log::{info, warn};
use mssp_core::{
    dataplane::{DataplaneError, backend::MapBackend},
    policy::{FieldError, PolicyError, document_digest, parse_policy},
};
use mssp_wire::{ErrorBody, FieldErrorView, views::PushApplied};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    Agent, AgentError,
    config::Config,
    serve::{self, Limits},
    state::Origin,
    views::{central_view, status_view, ts},
};

/// At most this many authenticated push connections at once.
const MAX_CONNECTIONS: usize = 32;
/// At most this many TLS handshakes at once. A handshake is the only thing an
/// unauthenticated client can hold, so the authenticated slots above stay free for the
/// controllers whatever plain TCP clients do.
const MAX_HANDSHAKES: usize = 256;

/// Who is pushing: the verified client certificate's subject and the address.
#[derive(Clone, Debug)]
struct Client {
    subject: String,
    addr: SocketAddr,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.subject, self.addr)
    }
}

struct PushState<B: MapBackend> {
    agent: Arc<Agent<B>>,
    /// One push at a time, from reading the body to the reply: two large documents are
    /// never in memory at once, and versions are checked and applied in arrival order.
    serial: tokio::sync::Mutex<()>,
    max_bytes: usize,
    timeout: std::time::Duration,
}

fn reply<T: serde::Serialize>(status: StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    reply(status, ErrorBody::new(msg))
}

fn router<B: MapBackend + Send + 'static>(state: Arc<PushState<B>>) -> Router {
    Router::new()
        .route("/v1/policy", get(get_policy::<B>).put(put_policy::<B>))
        .route("/v1/status", get(get_status::<B>))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route; the push API has PUT/GET /v1/policy and GET /v1/status",
            )
        })
        .with_state(state)
}

/// Checks the push settings and loads the certificates (a problem is a configuration
/// error: the agent refuses to start rather than run without its push channel).
pub fn tls_config(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, AgentError> {
    if cfg.push_listen.is_none() {
        return Ok(None);
    }
    let (Some(cert), Some(key), Some(ca)) = (&cfg.tls_cert, &cfg.tls_key, &cfg.client_ca) else {
        return Err(AgentError::Other(
            "push_listen needs tls_cert, tls_key and client_ca".into(),
        ));
    };
    let tls = crate::tls::server_config(cert, key, ca).map_err(|e| {
        AgentError::Config(crate::config::ConfigError {
            path: "push TLS".into(),
            message: e.to_string(),
        })
    })?;
    Ok(Some(Arc::new(tls)))
}

/// Serves the push API on `listener` until `stop`.
pub async fn serve<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = agent.config();
    let timeout = cfg
        .push_timeout()
        .unwrap_or(std::time::Duration::from_secs(60));
    if let (Ok(addr), Some(ca)) = (listener.local_addr(), &cfg.client_ca) {
        info!(
            "push API on https://{addr} (client certificates from {})",
            ca.display()
        );
    }
    let state = Arc::new(PushState {
        agent: agent.clone(),
        serial: tokio::sync::Mutex::new(()),
        max_bytes: cfg.push_max_bytes,
        timeout,
    });
    let app = router(state);
    // Handshakes and authenticated connections are bounded apart: plain TCP clients can
    // only ever hold handshake places, and even those go to newcomers first when full.
    let handshakes = Arc::new(serve::Connections::default());
    let authenticated = Arc::new(serve::Connections::default());
    let handshake_timeout = timeout.min(std::time::Duration::from_secs(10));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { serve::accept_failed("push API", e).await; continue; }
            },
            _ = stop.changed() => break,
        };
        let Some(hs) = handshakes.admit(MAX_HANDSHAKES, "push API (TLS handshakes)") else {
            drop(tcp);
            continue;
        };
        // The TLS settings of the moment: a reload may have rotated the certificates.
        let Some(tls) = agent
            .push_tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            break;
        };
        let acceptor = TlsAcceptor::from(tls);
        let (app, authenticated) = (app.clone(), authenticated.clone());
        let hs_id = hs.id();
        let h = conns.spawn(async move {
            let Some(tls) = handshake_with(acceptor, tcp, peer, handshake_timeout).await else {
                return;
            };
            // Authenticated: the handshake place is free again, and only now does the
            // connection take a push slot.
            drop(hs);
            let Some(slot) = authenticated.admit(MAX_CONNECTIONS, "push API") else {
                return;
            };
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map_or_else(|| "(no certificate)".into(), crate::tls::subject);
            let client = Client {
                subject,
                addr: peer,
            };
            let limits = Limits {
                max_connections: MAX_CONNECTIONS,
                header_timeout: timeout,
                max_lifetime: timeout * 4,
            };
            let (busy, slot_id) = (slot.busy.clone(), slot.id());
            let served = tokio::spawn(async move {
                let _slot = slot;
                serve::connection(tls, app.layer(Extension(client)), busy, limits).await;
            });
            authenticated.set_task(slot_id, served.abort_handle());
            let _ = served.await;
        });
        handshakes.set_task(hs_id, h);
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    // In-flight pushes finish (the caller bounds how long it waits for us).
    while conns.join_next().await.is_some() {}
}

async fn handshake_with(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    timeout: std::time::Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            warn!("push API: TLS handshake with {peer} refused: {e}");
            None
        }
        Err(_) => {
            warn!("push API: TLS handshake with {peer} took longer than {timeout:?}; closed");
            None
        }
    }
}

async fn get_policy<B: MapBackend + Send + 'static>(
    State(s): State<Arc<PushState<B>>>,
) -> Response {
    let agent = s.agent.clone();
    match tokio::task::spawn_blocking(move || central_view(&agent.lock(), false)).await {
        Ok(Ok(v)) => reply(StatusCode::OK, v),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("agent task failed: {e}"),
        ),
    }
}

async fn get_status<B: MapBackend + Send + 'static>(
    State(s): State<Arc<PushState<B>>>,
) -> Response {
    let agent = s.agent.clone();
    match tokio::task::spawn_blocking(move || {
        let state = agent.lock();
        status_view(&agent, &state)
    })
    .await
    {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("agent task failed: {e}"),
        ),
    }
}

/// Query of `PUT /v1/policy`.
#[derive(serde::Deserialize, Default)]
struct PutQuery {
    /// Accept a version at or above [`MAX_VERSION`].
    #[serde(default)]
    force_version: bool,
    /// Check and diff only; apply nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Versions from here on are refused unless forced: a push of 2^64 - 1 would otherwise
/// block every later push for good (`mssp policy reset-version` undoes one that got in).
pub const MAX_VERSION: u64 = 1 << 63;

async fn put_policy<B: MapBackend + Send + 'static>(
    State(s): State<Arc<PushState<B>>>,
    Extension(client): Extension<Client>,
    axum::extract::Query(q): axum::extract::Query<PutQuery>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > s.max_bytes as u64
    {
        warn!(
            "push from {client}: {n} bytes refused (push_max_bytes {})",
            s.max_bytes
        );
        // Read and discard what the client is still sending (bounded by push_timeout), so
        // it can finish writing and read the 413 instead of failing on a reset connection.
        let body = req.into_body();
        let within = s.timeout;
        tokio::spawn(async move {
            let mut data = body.into_data_stream();
            let _ = tokio::time::timeout(within, async {
                while let Some(Ok(_)) = data.next().await {}
            })
            .await;
        });
        return too_large(n, s.max_bytes);
    }
    // One push at a time from here on, the body included: two large documents are never
    // in memory at once.
    let _serial = s.serial.lock().await;
    let body = match tokio::time::timeout(
        s.timeout,
        axum::body::to_bytes(req.into_body(), s.max_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>());
            if over {
                warn!(
                    "push from {client}: body over push_max_bytes ({})",
                    s.max_bytes
                );
                return too_large(s.max_bytes as u64 + 1, s.max_bytes);
            }
            warn!("push from {client}: reading the request failed: {e}");
            return error(
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {e}"),
            );
        }
        Err(_) => {
            warn!(
                "push from {client}: request not received within {:?}",
                s.timeout
            );
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} (push_timeout)",
                    humantime::format_duration(s.timeout)
                ),
            );
        }
    };
    let received_ms = started.elapsed().as_secs_f64() * 1000.0;
    let agent = s.agent.clone();
    let who = client.to_string();
    if q.dry_run {
        return match tokio::task::spawn_blocking(move || check_document(&agent, &body)).await {
            Ok(c) => reply(StatusCode::OK, c),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("check task: {e}"),
            ),
        };
    }
    let force = q.force_version;
    let auditor = who.clone();
    let r = tokio::task::spawn_blocking(move || {
        let r = apply(&agent, &body, &who, force);
        // The document's bytes went through the heap too: hand it back now (after the reply
        // is on its way), not at the next push.
        crate::state::dispose(body);
        r
    })
    .await
    .unwrap_or_else(|e| {
        Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("agent task failed: {e}"),
        )))
    });
    crate::audit::record(&crate::audit::Event {
        who: &auditor,
        what: "push",
        target: match &r {
            Ok(v) => serde_json::json!({"version": v.version, "digest": v.digest}),
            Err(_) => Value::Null,
        },
        comment: None,
        result: match &r {
            Ok(_) => "ok".into(),
            Err(resp) => format!("refused: HTTP {}", resp.status().as_u16()),
        },
    });
    match r {
        Ok(mut v) => {
            v.received_ms = received_ms;
            v.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            info!(
                "push from {client}: version {} applied in {:.0} ms",
                v.version, v.elapsed_ms
            );
            reply(StatusCode::OK, v)
        }
        Err(resp) => *resp,
    }
}

fn too_large(n: u64, max: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the policy document is {n} bytes or more; this agent takes at most {max} (push_max_bytes)"
        ),
    )
}

/// Validates, checks the version and applies, all under the agent lock once validated.
fn apply<B: MapBackend>(
    agent: &Agent<B>,
    body: &[u8],
    who: &str,
    force_version: bool,
) -> Result<PushApplied, Box<Response>> {
    let cap = agent.config().policy_capacity();
    let t0 = Instant::now();
    let policy = match parse_policy(body, &cap) {
        Ok(p) => p,
        Err(e) => {
            warn!("push from {who} refused: {e}");
            return Err(Box::new(invalid(&e, body)));
        }
    };
    let validate_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if policy.version >= MAX_VERSION && !force_version {
        warn!(
            "push from {who} refused: version {} is absurdly high",
            policy.version
        );
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "version {} is 2^63 or more: accepting it would leave almost no room for later \
                 pushes (one of 2^64 - 1 blocks them for good); push a smaller version, or add \
                 ?force_version=true (mssp push --force-version) if this is really meant",
                policy.version
            ),
        )));
    }
    let digest = document_digest(body);
    let mut state = agent.lock();
    let held = state
        .central
        .as_ref()
        .map(|c| (c.version, c.digest.clone()));
    if let Some((v, d)) = &held
        && policy.version <= *v
    {
        warn!(
            "push from {who} refused: version {} is not above the {v} in force",
            policy.version
        );
        return Err(Box::new(reply(
            StatusCode::CONFLICT,
            ErrorBody {
                version: Some(*v),
                digest: Some(d.clone()),
                ..ErrorBody::new(format!(
                    "version {} is not newer than version {v} in force; push a greater version",
                    policy.version
                ))
            },
        )));
    }
    let version = policy.version;
    let t1 = Instant::now();
    let origin = Origin {
        digest: digest.clone(),
        source: format!("push from {who}"),
    };
    match state.set_central(policy, body, origin, "push") {
        Ok(stats) => {
            let applied_at = state.central.as_ref().map(|c| ts(c.applied_at));
            drop(state);
            agent.expiry_changed.notify_one();
            Ok(PushApplied {
                version,
                digest,
                applied_at,
                received_ms: 0.0,
                validate_ms,
                apply_ms: t1.elapsed().as_secs_f64() * 1000.0,
                elapsed_ms: 0.0,
                customers_changed: stats.customers_changed,
                customers_removed: stats.customers_removed,
            })
        }
        Err(e) => {
            let (v, d) = held.unwrap_or((0, String::new()));
            warn!(
                "push from {who}: version {version} not applied: {e}; version {v} stays in force"
            );
            let status = match &e {
                AgentError::Dataplane(
                    DataplaneError::Full(_)
                    | DataplaneError::SlotsFull { .. }
                    | DataplaneError::IdsFull { .. }
                    | DataplaneError::TooManyRules { .. },
                ) => StatusCode::INSUFFICIENT_STORAGE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(Box::new(reply(
                status,
                ErrorBody {
                    version: Some(v),
                    digest: (!d.is_empty()).then_some(d),
                    ..ErrorBody::new(format!(
                        "version {version} was not applied: {e}; version {v} stays wholly in force"
                    ))
                },
            )))
        }
    }
}

/// Whether this agent would apply `body`: validated with its capacities, version above the
/// one held, rules counted with its other layers; and what it would change.
pub fn check_document<B: MapBackend>(
    agent: &Agent<B>,
    body: &[u8],
) -> mssp_wire::views::PolicyCheck {
    let cap = agent.config().policy_capacity();
    let policy = match parse_policy(body, &cap) {
        Ok(p) => p,
        Err(e) => {
            let doc: Option<Value> = serde_json::from_slice(body).ok();
            return mssp_wire::views::PolicyCheck {
                valid: false,
                errors: e
                    .field_errors()
                    .into_iter()
                    .take(MAX_ERRORS_LISTED)
                    .map(|f| FieldErrorView {
                        value: doc
                            .as_ref()
                            .and_then(|d| value_at(d, &f.path))
                            .cloned()
                            .unwrap_or(Value::Null),
                        path: f.path,
                        message: f.message,
                    })
                    .collect(),
                diff: None,
            };
        }
    };
    let state = agent.lock();
    let mut errors = Vec::new();
    let held = state.central_version();
    if state.central.is_some() && policy.version <= held {
        errors.push(FieldErrorView {
            path: "version".into(),
            value: Value::from(policy.version),
            message: format!("not newer than version {held} in force; push a greater version"),
        });
    }
    if let Err(e) = mssp_core::dataplane::check(&crate::layers::desired(
        &policy,
        &state.local,
        &state.auto,
        &state.fleet,
    )) {
        errors.push(FieldErrorView {
            path: String::new(),
            value: Value::Null,
            message: e.to_string(),
        });
    }
    mssp_wire::views::PolicyCheck {
        valid: errors.is_empty(),
        errors,
        diff: Some(crate::diff::diff(&state.policy, &policy)),
    }
}

/// At most this many field errors in a 400 reply (the total is given too).
const MAX_ERRORS_LISTED: usize = 100;

/// 400 with every problem: the field path, the value found there and what is wrong.
fn invalid(e: &PolicyError, body: &[u8]) -> Response {
    let errors = e.field_errors();
    // The document is parsed again only on this path, to quote the offending values.
    let doc: Option<Value> = match e {
        PolicyError::Invalid(_) => serde_json::from_slice(body).ok(),
        _ => None,
    };
    let listed: Vec<FieldErrorView> = errors
        .iter()
        .take(MAX_ERRORS_LISTED)
        .map(|f: &FieldError| FieldErrorView {
            path: f.path.clone(),
            value: doc
                .as_ref()
                .and_then(|d| value_at(d, &f.path))
                .cloned()
                .unwrap_or(Value::Null),
            message: f.message.clone(),
        })
        .collect();
    reply(
        StatusCode::BAD_REQUEST,
        ErrorBody {
            errors: Some(listed),
            errors_total: Some(errors.len()),
            ..ErrorBody::new(format!("invalid policy, nothing applied: {e}"))
        },
    )
}

/// The value at a validation path such as `customers[3].sources[1].prefix`.
pub fn value_at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let mut v = doc;
    for seg in path.split('.') {
        let (name, mut rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            v = v.get(name)?;
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped.find(']')?;
            v = v.get(stripped[..end].parse::<usize>().ok()?)?;
            rest = &stripped[end + 1..];
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_at_paths() {
        let d: Value = serde_json::from_str(
            r#"{"customers":[{"id":1},{"id":2,"sources":[{"prefix":"a"},{"prefix":"b"}]}],"infrastructure":["x"]}"#,
        )
        .unwrap();
        assert_eq!(
            value_at(&d, "customers[1].sources[1].prefix"),
            Some(&json!("b"))
        );
        assert_eq!(value_at(&d, "infrastructure[0]"), Some(&json!("x")));
        assert_eq!(value_at(&d, "customers[0].id"), Some(&json!(1)));
        assert_eq!(value_at(&d, "customers[5].id"), None);
        assert_eq!(value_at(&d, ""), None);
    }
}
