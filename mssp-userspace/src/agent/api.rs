//! The local API on the agent's Unix socket (HTTP/1.1 + JSON, so `curl --unix-socket` works
//! too). Every handler that touches the maps runs on the blocking pool under the agent lock.

use std::{os::unix::fs::PermissionsExt, sync::Arc};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Query, State, connect_info::Connected},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    serve::IncomingStream,
};
use mssp_common::{Reason, Verdict, abi::ABI_VERSION, reason::NREASONS};
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::net::UnixListener;

use super::{
    Agent, Inner,
    store::{LocalEntry, ScopeDoc, SourceActionDoc},
    views::*,
};
use crate::{
    config::Config,
    dataplane::{Desired, EntryKey, Layer, Scope, backend::MapBackend},
    policy::cidr::{format_net, parse_cidr},
};

/// An API error: status and a message naming the bad value.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorView { error: self.1 })).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Who is on the other end of the socket.
#[derive(Clone, Debug)]
pub struct Peer {
    pub uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

fn user_name(uid: u32) -> String {
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

async fn blocking<T: Send + 'static>(
    agent: &Arc<Agent>,
    f: impl FnOnce(&mut Inner) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
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

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/stats", get(stats))
        .route("/v1/policy", get(policy))
        .route("/v1/blocks", get(blocks).post(block_add).delete(block_del))
        .route("/v1/rules", get(rules_list).post(rule_add).delete(rule_del))
        .with_state(agent)
}

/// Binds the socket (refusing to steal it from a live agent), sets its mode and group, and
/// serves until `stop`.
pub async fn serve_unix(
    agent: Arc<Agent>,
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
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
    let app = router(agent).into_make_service_with_connect_info::<Peer>();
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    }))
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

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn status_view(agent: &Agent, inner: &Inner) -> StatusView {
    let cfg = agent.config();
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started: ts(agent.started),
        uptime_seconds: (OffsetDateTime::now_utc() - agent.started)
            .whole_seconds()
            .max(0) as u64,
        pin_dir: cfg.pin_dir.display().to_string(),
        abi: ABI_VERSION,
        interfaces: inner.attached.clone(),
        central: LayerVersion {
            version: inner.central_version(),
            digest: inner.central.as_ref().map(|c| c.digest.clone()),
            applied_at: inner.central.as_ref().map(|c| ts(c.applied_at)),
        },
        local_entries: inner.local.entries.len(),
        customers: inner.dp.customers().len(),
        last_apply: inner.last_apply.as_ref().map(|l| ApplyView {
            at: ts(l.at),
            duration_ms: l.duration.as_secs_f64() * 1000.0,
            trigger: l.trigger.clone(),
            customers_changed: l.stats.customers_changed,
            customers_removed: l.stats.customers_removed,
            root_changed: l.stats.root_changed,
        }),
        last_error: inner.last_error.clone(),
        maps: inner.dp.fill().iter().map(FillView::from).collect(),
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Result<Json<StatusView>, ApiError> {
    let a = agent.clone();
    blocking(&agent, move |inner| Ok(Json(status_view(&a, inner)))).await
}

#[derive(Deserialize)]
struct StatsQuery {
    customer: Option<u32>,
}

pub fn stats_view(inner: &Inner, only: Option<u32>) -> Result<StatsView, ApiError> {
    let mut rows: Vec<(Option<u32>, u32)> = vec![(None, 0)];
    rows.extend(inner.dp.customers().into_iter().map(|(c, s)| (Some(c), s)));
    if let Some(c) = only {
        rows.retain(|(id, _)| *id == Some(c));
        if rows.is_empty() {
            return Err(unknown_customer(inner, c));
        }
    }
    let internal = |e: crate::dataplane::backend::MapOpError| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    // One bulk read for many customers, a few small ones for one.
    let table = if rows.len() > 1 {
        Some(inner.dp.backend().read_counter_table().map_err(internal)?)
    } else {
        None
    };
    let mut out = Vec::new();
    for (customer, slot) in rows {
        let mut counters = Vec::new();
        let (mut passed, mut dropped) = (0, 0);
        let vals = match &table {
            Some(t) => t.of(slot),
            None => inner
                .dp
                .backend()
                .read_slot_counters(slot)
                .map_err(internal)?,
        };
        for (i, c) in vals.iter().enumerate() {
            if c.packets == 0 {
                continue;
            }
            let (v, r) = (i as u32 / NREASONS, i as u32 % NREASONS);
            if v == Verdict::Drop as u32 {
                dropped += c.packets;
            } else {
                passed += c.packets;
            }
            counters.push(CounterView {
                verdict: Verdict::from_u32(v).map_or("?", |x| x.name()).into(),
                reason: Reason::from_u32(r).map_or("unknown", |x| x.name()).into(),
                packets: c.packets,
                bytes: c.bytes,
            });
        }
        out.push(CustomerStats {
            customer,
            name: customer
                .and_then(|c| inner.policy.customer(c))
                .and_then(|c| c.name.clone()),
            counters,
            passed_packets: passed,
            dropped_packets: dropped,
        });
    }
    Ok(StatsView { customers: out })
}

async fn stats(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<StatsView>, ApiError> {
    blocking(&agent, move |inner| stats_view(inner, q.customer).map(Json)).await
}

#[derive(Deserialize)]
struct PolicyQuery {
    #[serde(default)]
    full: bool,
}

async fn policy(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<PolicyQuery>,
) -> Result<Response, ApiError> {
    blocking(&agent, move |inner| {
        let v = match (&inner.central, q.full) {
            (Some(c), true) => serde_json::json!({"version": c.version, "digest": c.digest, "applied_at": ts(c.applied_at), "source": c.source, "policy": inner.policy.doc}),
            (Some(c), false) => serde_json::json!({"version": c.version, "digest": c.digest, "applied_at": ts(c.applied_at), "source": c.source}),
            (None, _) => serde_json::json!({"version": 0, "digest": null, "applied_at": null, "source": null}),
        };
        Ok(Json(v).into_response())
    })
    .await
}

fn unknown_customer(inner: &Inner, id: u32) -> ApiError {
    let mut known: Vec<u32> = inner.policy.customers.iter().map(|c| c.id).collect();
    known.sort_unstable();
    let list = if known.len() > 12 {
        format!(
            "{} customers, e.g. {}",
            known.len(),
            known[..12]
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if known.is_empty() {
        "none: no central policy holds customers yet".into()
    } else {
        known
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    ApiError(
        StatusCode::NOT_FOUND,
        format!(
            "unknown customer id {id}; the central policy (version {}) has {list}",
            inner.central_version()
        ),
    )
}

#[derive(Deserialize)]
struct ScopeQuery {
    customer: Option<u32>,
    #[serde(default)]
    global: bool,
}

fn scope_of(customer: Option<u32>, global: bool) -> Result<Option<Scope>, ApiError> {
    match (customer, global) {
        (Some(_), true) => Err(bad("give --customer ID or --global, not both")),
        (Some(c), false) => Ok(Some(Scope::Customer(c))),
        (None, true) => Ok(Some(Scope::Global)),
        (None, false) => Ok(None),
    }
}

fn scope_name(s: Scope) -> String {
    match s {
        Scope::Global => "global".into(),
        Scope::Customer(c) => format!("customer:{c}"),
    }
}

pub fn blocks_view(inner: &Inner, filter: Option<Scope>) -> Vec<BlockView> {
    let now = OffsetDateTime::now_utc();
    let d = super::desired(&inner.policy, &inner.local);
    let hits = |scope: Scope, layer: Layer, prefix: &str| {
        let Ok(net) = parse_cidr(prefix, true) else {
            return (0, 0);
        };
        inner
            .dp
            .entry_id(&EntryKey { scope, layer, net })
            .and_then(|id| inner.dp.backend().read_entry_hits(id).ok())
            .map_or((0, 0), |c| (c.packets, c.bytes))
    };
    let mut out = Vec::new();
    let mut lists: Vec<(Scope, Vec<crate::dataplane::DesiredEntry>)> =
        vec![(Scope::Global, d.global.clone())];
    lists.extend(
        d.customers
            .iter()
            .map(|c| (Scope::Customer(c.id), c.entries.clone())),
    );
    let central_who = format!("controller (policy version {})", inner.central_version());
    let central_at = inner
        .central
        .as_ref()
        .map(|c| ts(c.applied_at))
        .unwrap_or_default();
    for (scope, entries) in lists {
        if filter.is_some_and(|f| f != scope) {
            continue;
        }
        let effective: Vec<(mssp_common::Net, Layer)> = Desired::effective(&entries, now)
            .into_iter()
            .map(|e| (e.net, e.layer))
            .collect();
        for e in &entries {
            let prefix = format_net(&e.net);
            let enforced = effective.contains(&(e.net, e.layer));
            let note = if enforced {
                None
            } else if !e.in_effect(now) {
                Some("expired".to_string())
            } else {
                Some("overridden by the local entry for the same prefix".to_string())
            };
            let (who, added, comment) = match e.layer {
                Layer::Central => {
                    let comment = central_comment(inner, scope, &e.net);
                    (central_who.clone(), central_at.clone(), comment)
                }
                Layer::Local => {
                    let l = inner
                        .local
                        .entries
                        .iter()
                        .find(|l| l.scope.scope() == scope && l.net() == e.net);
                    (
                        l.map(|l| l.who.clone()).unwrap_or_default(),
                        l.map(|l| ts(l.added)).unwrap_or_default(),
                        l.and_then(|l| l.comment.clone()),
                    )
                }
            };
            let (hp, hb) = hits(scope, e.layer, &prefix);
            out.push(BlockView {
                scope: scope_name(scope),
                prefix,
                action: e.action.name().into(),
                layer: e.layer.name().into(),
                enforced,
                note,
                expires: e.expires.map(ts),
                comment,
                who,
                added,
                hits_packets: hp,
                hits_bytes: hb,
            });
        }
    }
    // Local entries whose customer the central policy lacks.
    for l in &inner.local.entries {
        if let Scope::Customer(c) = l.scope.scope()
            && inner.policy.customer(c).is_none()
            && filter.is_none_or(|f| f == l.scope.scope())
        {
            out.push(BlockView {
                scope: scope_name(l.scope.scope()),
                prefix: l.prefix.clone(),
                action: l.action.action().name().into(),
                layer: "local".into(),
                enforced: false,
                note: Some(format!("customer {c} is not in the central policy")),
                expires: l.expires.map(ts),
                comment: l.comment.clone(),
                who: l.who.clone(),
                added: ts(l.added),
                hits_packets: 0,
                hits_bytes: 0,
            });
        }
    }
    out
}

fn central_comment(inner: &Inner, scope: Scope, net: &mssp_common::Net) -> Option<String> {
    let list = match scope {
        Scope::Global => &inner.policy.global,
        Scope::Customer(c) => &inner.policy.customer(c)?.sources,
    };
    list.iter()
        .find(|s| s.net == *net)
        .and_then(|s| s.comment.clone())
}

async fn blocks(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<BlockView>>, ApiError> {
    let filter = scope_of(q.customer, q.global)?;
    blocking(&agent, move |inner| {
        if let Some(Scope::Customer(c)) = filter
            && inner.policy.customer(c).is_none()
            && !inner
                .local
                .entries
                .iter()
                .any(|l| l.scope.scope() == Scope::Customer(c))
        {
            return Err(unknown_customer(inner, c));
        }
        Ok(Json(blocks_view(inner, filter)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockAdd {
    pub prefix: String,
    #[serde(default)]
    pub customer: Option<u32>,
    #[serde(default)]
    pub global: bool,
    #[serde(default)]
    pub action: Option<String>,
    /// A duration such as "10m", "2h", "1d".
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// The operator's name as the CLI knows it ($SUDO_USER, $USER).
    #[serde(default)]
    pub user: Option<String>,
}

fn parse_action(a: Option<&str>) -> Result<SourceActionDoc, ApiError> {
    match a.unwrap_or("drop") {
        "drop" => Ok(SourceActionDoc::Drop),
        "allow" => Ok(SourceActionDoc::Allow),
        "monitor" => Ok(SourceActionDoc::Monitor),
        other => Err(bad(format!(
            "action {other:?} is not one of drop, allow, monitor"
        ))),
    }
}

async fn block_add(
    State(agent): State<Arc<Agent>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(req): Json<BlockAdd>,
) -> Result<Json<BlockView>, ApiError> {
    let scope = scope_of(req.customer, req.global)?
        .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
    let net = parse_cidr(&req.prefix, true).map_err(bad)?;
    let action = parse_action(req.action.as_deref())?;
    let expires = match &req.ttl {
        None => None,
        Some(t) => {
            let d = humantime::parse_duration(t).map_err(|e| {
                bad(format!(
                    "ttl {t:?} is not a duration ({e}); write e.g. 10m, 2h, 1d"
                ))
            })?;
            if d.is_zero() {
                return Err(bad(format!("ttl {t:?} is zero; give a positive duration")));
            }
            Some(OffsetDateTime::now_utc() + d)
        }
    };
    let who = match (peer.uid.map(user_name), req.user.as_deref()) {
        (Some(u), Some(c)) if u != c => format!("{c} (as {u})"),
        (Some(u), _) => u,
        (None, Some(c)) => c.to_string(),
        (None, None) => "unknown".into(),
    };
    let entry = LocalEntry {
        scope: ScopeDoc::from_scope(scope),
        prefix: format_net(&net),
        action,
        expires,
        comment: req.comment.clone(),
        who,
        added: OffsetDateTime::now_utc(),
    };
    let a2 = agent.clone();
    let view = blocking(&agent, move |inner| {
        if let Scope::Customer(c) = scope
            && inner.policy.customer(c).is_none()
        {
            return Err(unknown_customer(inner, c));
        }
        let mut local = inner.local.clone();
        local
            .entries
            .retain(|e| !(e.scope.scope() == scope && e.net() == net));
        local.entries.push(entry);
        inner.set_local(local, "block add").map_err(|e| {
            ApiError(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("nothing changed: {e}"),
            )
        })?;
        a2.expiry_changed.notify_one();
        blocks_view(inner, Some(scope))
            .into_iter()
            .find(|b| b.layer == "local" && b.prefix == format_net(&net))
            .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "entry vanished".into()))
    })
    .await?;
    Ok(Json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDel {
    pub prefix: String,
    #[serde(default)]
    pub customer: Option<u32>,
    #[serde(default)]
    pub global: bool,
}

async fn block_del(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<BlockDel>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = scope_of(req.customer, req.global)?
        .ok_or_else(|| bad("say which list: --customer ID or --global"))?;
    let net = parse_cidr(&req.prefix, true).map_err(bad)?;
    blocking(&agent, move |inner| {
        let mut local = inner.local.clone();
        let before = local.entries.len();
        local.entries.retain(|e| !(e.scope.scope() == scope && e.net() == net));
        if local.entries.len() == before {
            let central = match scope {
                Scope::Global => inner.policy.global.iter().any(|s| s.net == net),
                Scope::Customer(c) => {
                    if inner.policy.customer(c).is_none() {
                        return Err(unknown_customer(inner, c));
                    }
                    inner.policy.customer(c).is_some_and(|c| c.sources.iter().any(|s| s.net == net))
                }
            };
            let msg = if central {
                format!(
                    "{} in {} comes from the central policy (version {}); the CLI edits the local layer only — \
                     ask the controller to remove it, or override it locally with `mssp block add {} --action allow`",
                    format_net(&net),
                    scope_name(scope),
                    inner.central_version(),
                    format_net(&net)
                )
            } else {
                format!("no local entry {} in {}", format_net(&net), scope_name(scope))
            };
            return Err(ApiError(StatusCode::NOT_FOUND, msg));
        }
        inner
            .set_local(local, "block del")
            .map_err(|e| ApiError(StatusCode::INSUFFICIENT_STORAGE, format!("nothing changed: {e}")))?;
        Ok(Json(serde_json::json!({"removed": format_net(&net), "scope": scope_name(scope)})))
    })
    .await
}

#[derive(Deserialize)]
struct RulesQuery {
    customer: u32,
}

pub fn rules_view(inner: &Inner, customer: u32) -> Vec<RuleView> {
    use crate::dataplane::{StatKey, StatKind};
    let d = super::desired(&inner.policy, &inner.local);
    let Some(c) = d.customers.iter().find(|c| c.id == customer) else {
        return Vec::new();
    };
    let order: Vec<(Layer, u32)> = c
        .effective_rules()
        .iter()
        .map(|r| (r.layer, r.spec.id))
        .collect();
    let counters = |layer: Layer, id: u32| {
        inner
            .dp
            .stat_id(&StatKey {
                customer,
                kind: StatKind::Rule { layer, id },
            })
            .and_then(|s| inner.dp.backend().read_rule_stats(s, 1).ok())
            .map(|v| v[0])
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let central = inner.policy.customer(customer);
    let central_docs = inner
        .policy
        .doc
        .customers
        .iter()
        .find(|x| x.id == customer)
        .map(|x| x.rules.clone())
        .unwrap_or_default();
    let mut push = |layer: Layer, id: u32, doc: serde_json::Value, who: String, added: String| {
        let pos = order.iter().position(|o| *o == (layer, id));
        let k = counters(layer, id);
        out.push(RuleView {
            customer,
            id,
            layer: layer.name().into(),
            order: pos.map(|p| p + 1),
            enforced: pos.is_some(),
            note: pos.is_none().then(|| match layer {
                Layer::Central => "replaced by the local rule with the same id".to_string(),
                Layer::Local => "no longer valid for the customer's prefixes".to_string(),
            }),
            rule: doc,
            who,
            added,
            packets: k.packets,
            bytes: k.bytes,
            limited_packets: k.limited_packets,
        });
    };
    for r in inner.local.rules.iter().filter(|r| r.customer == customer) {
        push(
            Layer::Local,
            r.rule.id,
            serde_json::to_value(&r.rule).unwrap_or_default(),
            r.who.clone(),
            ts(r.added),
        );
    }
    if central.is_some() {
        let who = format!("controller (policy version {})", inner.central_version());
        let at = inner
            .central
            .as_ref()
            .map(|c| ts(c.applied_at))
            .unwrap_or_default();
        for r in &central_docs {
            push(
                Layer::Central,
                r.id,
                serde_json::to_value(r).unwrap_or_default(),
                who.clone(),
                at.clone(),
            );
        }
    }
    out.sort_by_key(|r| r.order.unwrap_or(usize::MAX));
    out
}

async fn rules_list(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<RulesQuery>,
) -> Result<Json<Vec<RuleView>>, ApiError> {
    blocking(&agent, move |inner| {
        if inner.policy.customer(q.customer).is_none() {
            return Err(unknown_customer(inner, q.customer));
        }
        Ok(Json(rules_view(inner, q.customer)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleAdd {
    pub customer: u32,
    pub rule: serde_json::Value,
    #[serde(default)]
    pub user: Option<String>,
}

async fn rule_add(
    State(agent): State<Arc<Agent>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(req): Json<RuleAdd>,
) -> Result<Json<RuleView>, ApiError> {
    let doc: crate::policy::rules_doc::RuleDoc = {
        serde_path_to_error::deserialize(req.rule.clone()).map_err(|e| {
            let path = e.path().to_string();
            bad(format!("rule.{path}: {}", e.into_inner()))
        })?
    };
    let who = match (peer.uid.map(user_name), req.user.as_deref()) {
        (Some(u), Some(c)) if u != c => format!("{c} (as {u})"),
        (Some(u), _) => u,
        (None, Some(c)) => c.to_string(),
        (None, None) => "unknown".into(),
    };
    let customer = req.customer;
    blocking(&agent, move |inner| {
        let Some(c) = inner.policy.customer(customer) else {
            return Err(unknown_customer(inner, customer));
        };
        let mut errors = Vec::new();
        if crate::policy::rules::rule(&doc, "rule", &c.prefixes, &mut errors).is_none() {
            return Err(bad(errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")));
        }
        let mut local = inner.local.clone();
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
        if total > mssp_common::abi::MAX_RULES_PER_CUSTOMER as usize {
            return Err(ApiError(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "customer {customer} would have {total} rules; a customer holds at most {}",
                    mssp_common::abi::MAX_RULES_PER_CUSTOMER
                ),
            ));
        }
        let id = doc.id;
        local.rules.push(super::store::LocalRule {
            customer,
            rule: doc,
            who,
            added: OffsetDateTime::now_utc(),
        });
        inner.set_local(local, "rule add").map_err(|e| {
            ApiError(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("nothing changed: {e}"),
            )
        })?;
        rules_view(inner, customer)
            .into_iter()
            .find(|r| r.layer == "local" && r.id == id)
            .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "rule vanished".into()))
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDel {
    pub customer: u32,
    pub id: u32,
}

async fn rule_del(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<RuleDel>,
) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(&agent, move |inner| {
        let Some(c) = inner.policy.customer(req.customer) else {
            return Err(unknown_customer(inner, req.customer));
        };
        let mut local = inner.local.clone();
        let before = local.rules.len();
        local.rules.retain(|r| !(r.customer == req.customer && r.rule.id == req.id));
        if local.rules.len() == before {
            let msg = if c.rules.iter().any(|r| r.id == req.id) {
                format!(
                    "rule {} of customer {} comes from the central policy (version {}); the CLI edits the local layer only — \
                     override it with a local rule of the same id",
                    req.id,
                    req.customer,
                    inner.central_version()
                )
            } else {
                format!("customer {} has no local rule {}", req.customer, req.id)
            };
            return Err(ApiError(StatusCode::NOT_FOUND, msg));
        }
        inner
            .set_local(local, "rule del")
            .map_err(|e| ApiError(StatusCode::INSUFFICIENT_STORAGE, format!("nothing changed: {e}")))?;
        Ok(Json(serde_json::json!({"removed": req.id, "customer": req.customer})))
    })
    .await
}
