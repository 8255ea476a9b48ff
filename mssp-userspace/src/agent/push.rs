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
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{info, warn};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{Agent, AgentError, Origin};
use crate::{
    config::Config,
    dataplane::DataplaneError,
    policy::{FieldError, PolicyError, parse_policy},
};

/// At most this many push connections at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;
/// At most this many field errors in a 400 reply (the total is given too).
const MAX_ERRORS_LISTED: usize = 100;

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

struct PushState {
    agent: Arc<Agent>,
    /// One push at a time, from validation to reply: two large documents are never held
    /// in memory at once, and versions are checked and applied in arrival order.
    serial: tokio::sync::Mutex<()>,
    max_bytes: usize,
    timeout: std::time::Duration,
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn router(state: Arc<PushState>) -> Router {
    Router::new()
        .route("/v1/policy", get(get_policy).put(put_policy))
        .route("/v1/status", get(get_status))
        .fallback(|| async {
            reply(
                StatusCode::NOT_FOUND,
                json!({"error": "no such route; the push API has PUT/GET /v1/policy and GET /v1/status"}),
            )
        })
        .with_state(state)
}

/// Binds `push_listen` and serves until `stop`. Certificate problems are configuration
/// errors: the agent refuses to start rather than run without its push channel.
pub async fn serve(
    agent: Arc<Agent>,
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, AgentError> {
    let Some(addr) = cfg.push_listen else {
        return Ok(None);
    };
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
    let timeout = cfg.push_timeout().map_err(AgentError::Other)?;
    *agent.push_tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(tls));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| AgentError::Other(format!("push_listen {addr}: cannot bind: {e}")))?;
    info!(
        "push API on https://{addr} (client certificates from {})",
        ca.display()
    );
    let state = Arc::new(PushState {
        agent: agent.clone(),
        serial: tokio::sync::Mutex::new(()),
        max_bytes: cfg.push_max_bytes,
        timeout,
    });
    let app = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(Some(tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("push API: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            // The TLS settings of the moment: SIGHUP may have rotated the certificates.
            let Some(tls) = agent
                .push_tls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            else {
                break;
            };
            let acceptor = TlsAcceptor::from(tls);
            let app = app.clone();
            conns.spawn(async move {
                let _permit = permit;
                connection(acceptor, app, tcp, peer, timeout).await;
            });
            // Reap finished connections so the set does not grow.
            while conns.try_join_next().is_some() {}
        }
        // In-flight pushes finish (the caller bounds how long it waits for us).
        while conns.join_next().await.is_some() {}
    })))
}

async fn connection(
    acceptor: TlsAcceptor,
    app: Router,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    timeout: std::time::Duration,
) {
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!("push API: TLS handshake with {peer} refused: {e}");
            return;
        }
        Err(_) => {
            warn!("push API: TLS handshake with {peer} took longer than {timeout:?}; closed");
            return;
        }
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
    let svc = hyper_util::service::TowerToHyperService::new(app.layer(Extension(client)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(64 * 1024);

    if let Err(e) = http.serve_connection(TokioIo::new(tls), svc).await
        && !e.is_incomplete_message()
    {
        warn!("push API: connection from {peer}: {e}");
    }
}

async fn get_policy(State(s): State<Arc<PushState>>) -> Response {
    let agent = s.agent.clone();
    let v = tokio::task::spawn_blocking(move || {
        let inner = agent.lock();
        policy_view(&inner)
    })
    .await
    .unwrap_or_else(|e| json!({"error": format!("agent task failed: {e}")}));
    reply(StatusCode::OK, v)
}

fn policy_view(inner: &super::Inner) -> Value {
    match &inner.central {
        Some(c) => json!({
            "version": c.version,
            "digest": c.digest,
            "applied_at": c.applied_at.format(&Rfc3339).unwrap_or_default(),
            "source": c.source,
        }),
        None => json!({"version": 0, "digest": null, "applied_at": null, "source": null}),
    }
}

async fn get_status(State(s): State<Arc<PushState>>) -> Response {
    let agent = s.agent.clone();
    match tokio::task::spawn_blocking(move || {
        let inner = agent.lock();
        super::api::status_view(&agent, &inner)
    })
    .await
    {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("agent task failed: {e}")}),
        ),
    }
}

async fn put_policy(
    State(s): State<Arc<PushState>>,
    Extension(client): Extension<Client>,
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
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("reading the request body failed: {e}")}),
            );
        }
        Err(_) => {
            warn!(
                "push from {client}: request not received within {:?}",
                s.timeout
            );
            return reply(
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": format!("the request body did not arrive within {} (push_timeout)", humantime::format_duration(s.timeout))}),
            );
        }
    };
    let received_ms = started.elapsed().as_secs_f64() * 1000.0;

    // One push at a time from here on.
    let _serial = s.serial.lock().await;
    let agent = s.agent.clone();
    let who = client.to_string();
    let r = tokio::task::spawn_blocking(move || apply(&agent, &body, &who))
        .await
        .unwrap_or_else(|e| {
            Err(reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": format!("agent task failed: {e}")}),
            ))
        });
    match r {
        Ok(mut v) => {
            v["received_ms"] = json!(received_ms);
            v["elapsed_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
            info!(
                "push from {client}: version {} applied in {:.0} ms",
                v["version"], v["elapsed_ms"]
            );
            reply(StatusCode::OK, v)
        }
        Err(resp) => resp,
    }
}

fn too_large(n: u64, max: usize) -> Response {
    reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        json!({"error": format!("the policy document is {n} bytes or more; this agent takes at most {max} (push_max_bytes)")}),
    )
}

/// Validates, checks the version and applies, all under the agent lock once validated.
fn apply(agent: &Agent, body: &[u8], who: &str) -> Result<Value, Response> {
    let cap = agent.config().policy_capacity();
    let t0 = Instant::now();
    let policy = match parse_policy(body, &cap) {
        Ok(p) => p,
        Err(e) => {
            warn!("push from {who} refused: {e}");
            return Err(invalid(&e, body));
        }
    };
    let validate_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let digest = crate::tls::digest(body);
    let mut inner = agent.lock();
    let held = inner
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
        return Err(reply(
            StatusCode::CONFLICT,
            json!({
                "error": format!("version {} is not newer than version {v} in force; push a greater version", policy.version),
                "version": v,
                "digest": d,
            }),
        ));
    }
    let version = policy.version;
    let t1 = Instant::now();
    let origin = Origin {
        digest: digest.clone(),
        source: format!("push from {who}"),
    };
    match inner.set_central(policy, origin, "push") {
        Ok(stats) => {
            let applied_at = inner
                .central
                .as_ref()
                .map(|c| c.applied_at.format(&Rfc3339).unwrap_or_default());
            drop(inner);
            agent.expiry_changed.notify_one();
            Ok(json!({
                "version": version,
                "digest": digest,
                "applied_at": applied_at,
                "validate_ms": validate_ms,
                "apply_ms": t1.elapsed().as_secs_f64() * 1000.0,
                "customers_changed": stats.customers_changed,
                "customers_removed": stats.customers_removed,
            }))
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
                    | DataplaneError::IdsFull { .. },
                ) => StatusCode::INSUFFICIENT_STORAGE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(reply(
                status,
                json!({
                    "error": format!("version {version} was not applied: {e}; version {v} stays wholly in force"),
                    "version": v,
                    "digest": if d.is_empty() { Value::Null } else { Value::String(d) },
                }),
            ))
        }
    }
}

/// 400 with every problem: the field path, the value found there and what is wrong.
fn invalid(e: &PolicyError, body: &[u8]) -> Response {
    let errors = e.field_errors();
    // The document is parsed again only on this path, to quote the offending values.
    let doc: Option<Value> = match e {
        PolicyError::Invalid(_) => serde_json::from_slice(body).ok(),
        _ => None,
    };
    let listed: Vec<Value> = errors
        .iter()
        .take(MAX_ERRORS_LISTED)
        .map(|f: &FieldError| {
            let value = doc
                .as_ref()
                .and_then(|d| value_at(d, &f.path))
                .cloned()
                .unwrap_or(Value::Null);
            json!({"path": f.path, "value": value, "message": f.message})
        })
        .collect();
    reply(
        StatusCode::BAD_REQUEST,
        json!({
            "error": format!("invalid policy, nothing applied: {e}"),
            "errors": listed,
            "errors_total": errors.len(),
        }),
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
