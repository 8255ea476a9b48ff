//! The controller's local API (Unix socket, mode 0660): what `mssp fleet ...` calls.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use mssp_wire::{
    ErrorBody,
    fleet::{
        Decision, DecisionItem, FleetAttacks, FleetBlockAdd, FleetDel, FleetRuleAdd, FleetStatus,
    },
};
use time::OffsetDateTime;

use crate::Controller;

type C = State<Arc<Controller>>;

fn refuse(status: StatusCode, msg: String) -> Response {
    (status, Json(ErrorBody::new(msg))).into_response()
}

fn ttl(v: Option<&str>) -> Result<time::Duration, String> {
    let v = v.unwrap_or("1h");
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("ttl {v:?}: {e}; give e.g. \"10m\", \"2h\", \"1d\""))?;
    if d.is_zero() || d > std::time::Duration::from_secs(366 * 86_400) {
        return Err(format!(
            "ttl {v:?}: give more than 0 and at most a year (fleet decisions always expire)"
        ));
    }
    time::Duration::try_from(d).map_err(|e| format!("ttl {v:?}: {e}"))
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

fn who(user: &Option<String>) -> String {
    user.clone().unwrap_or_else(|| "unknown".into())
}

async fn block_add(State(c): C, Json(b): Json<FleetBlockAdd>) -> Response {
    let ttl = match ttl(b.ttl.as_deref()) {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if b.global == b.customer.is_some() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "give --customer ID or --global, exactly one".into(),
        );
    }
    let action = b.action.clone().unwrap_or_else(|| "drop".into());
    if !matches!(action.as_str(), "drop" | "allow" | "monitor") {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("action {action:?}: give drop, allow or monitor"),
        );
    }
    if let Err(e) = check_prefix(&b.prefix) {
        return refuse(StatusCode::BAD_REQUEST, e);
    }
    let item = DecisionItem::Source {
        prefix: b.prefix.clone(),
        action,
    };
    let r = c
        .decide(
            new_id("fb"),
            b.customer,
            item,
            ttl,
            format!("fleet block by {}", who(&b.user)),
            b.comment.clone(),
        )
        .await;
    reply(r)
}

/// The prefix as a CIDR with no host bits (the edges check it again).
fn check_prefix(p: &str) -> Result<(), String> {
    let (addr, len) = p
        .split_once('/')
        .ok_or_else(|| format!("prefix {p:?}: give a CIDR like 198.18.66.0/24"))?;
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("prefix {p:?}: {addr:?} is not an address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("prefix {p:?}: {len:?} is not a prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix {p:?}: /{len} is longer than /{max}"));
    }
    Ok(())
}

async fn rule_add(State(c): C, Json(r): Json<FleetRuleAdd>) -> Response {
    let ttl = match ttl(r.ttl.as_deref()) {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    if !r.rule.is_object() || r.rule.get("match").is_none() || r.rule.get("action").is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "rule: give a rule object with \"match\" and \"action\" (the policy's syntax)".into(),
        );
    }
    let item = DecisionItem::Rule {
        rule: r.rule.clone(),
    };
    reply(
        c.decide(
            new_id("fr"),
            Some(r.customer),
            item,
            ttl,
            format!("fleet rule by {}", who(&r.user)),
            None,
        )
        .await,
    )
}

async fn del(State(c): C, Json(d): Json<FleetDel>) -> Response {
    match c.withdraw(&d.id, "the NOC").await {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            format!("no fleet decision {} in force", d.id),
        ),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn reply(r: Result<Decision, mssp_fleet::FleetError>) -> Response {
    match r {
        Ok(d) => Json(d).into_response(),
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not published: {e}"),
        ),
    }
}

async fn list(State(c): C) -> Json<Vec<Decision>> {
    Json(
        c.lock()
            .active(OffsetDateTime::now_utc())
            .cloned()
            .collect(),
    )
}

async fn status(State(c): C) -> Json<FleetStatus> {
    Json(c.lock().status(OffsetDateTime::now_utc()))
}

async fn attacks(State(c): C) -> Json<FleetAttacks> {
    Json(FleetAttacks {
        reports: c.lock().reports.iter().take(1000).cloned().collect(),
    })
}

pub fn router(c: Arc<Controller>) -> Router {
    Router::new()
        .route("/v1/fleet/blocks", post(block_add))
        .route("/v1/fleet/rules", post(rule_add))
        .route("/v1/fleet/decisions", get(list).delete(del))
        .route("/v1/fleet/status", get(status))
        .route("/v1/fleet/attacks", get(attacks))
        .with_state(c)
}
