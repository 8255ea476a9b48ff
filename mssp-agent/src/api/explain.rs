//! `/v1/explain` and `/v1/simulate`: packets through the real program over the live policy
//! (the pinned policy maps, with counters and token buckets of its own).

use std::{net::IpAddr, sync::Arc};

use axum::{Json, extract::State, http::StatusCode};
use mssp_core::{
    dataplane::backend::MapBackend,
    policy::rules::{TCP_FLAGS, protocol_number},
    probe::Probe,
    simulate::Decision,
};
use mssp_wire::{
    requests::{ProbeSpec, SimulateFrames},
    views::Explanation,
};

use super::{ApiError, bad, blocking};
use crate::{Agent, state::AgentState};

fn probe(spec: &ProbeSpec) -> Result<Probe, ApiError> {
    let addr = |what: &str, s: &str| -> Result<IpAddr, ApiError> {
        s.parse()
            .map_err(|_| bad(format!("--{what} {s:?} is not an IPv4 or IPv6 address")))
    };
    let mut p = Probe::new(addr("src", &spec.src)?, addr("dst", &spec.dst)?);
    if let Some(name) = &spec.proto {
        p.proto = protocol_number(name).ok_or_else(|| {
            bad(format!(
                "--proto {name:?} is not a protocol name (udp, tcp, icmp, …) or number 0-255"
            ))
        })?;
    }
    if p.src.is_ipv6() && p.proto == 1 {
        p.proto = 58;
    }
    p.sport = spec.sport.unwrap_or(p.sport);
    p.dport = spec.dport.unwrap_or(p.dport);
    if let Some(flags) = &spec.flags {
        let mut bits = 0u8;
        for f in flags {
            let (_, b) = TCP_FLAGS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(f))
                .ok_or_else(|| {
                    bad(format!(
                        "--flags: {f:?} is not a TCP flag (fin, syn, rst, psh, ack, urg, ece, cwr)"
                    ))
                })?;
            bits |= b;
        }
        p.tcp_flags = bits;
    }
    p.icmp_type = spec.icmp_type.unwrap_or(p.icmp_type);
    p.icmp_code = spec.icmp_code.unwrap_or(p.icmp_code);
    p.length = spec.length;
    p.ttl = spec.ttl.unwrap_or(p.ttl);
    p.dscp = spec.dscp.unwrap_or(0);
    p.vlan = spec.vlan;
    Ok(p)
}

/// A decision in the wire's terms, the customer named.
pub(crate) fn explanation<B: MapBackend>(state: &AgentState<B>, d: &Decision) -> Explanation {
    let c = d.customer.and_then(|id| state.policy.customer(id));
    let limited = c.is_some_and(|c| {
        c.limits.is_some()
            || c.rules
                .iter()
                .any(|r| matches!(r.action, mssp_core::policy::rules::RuleAction::RateLimit(_)))
    }) || state
        .local
        .rules
        .iter()
        .any(|r| Some(r.customer) == d.customer);
    Explanation {
        action: d.action.into(),
        reason: d.reason.into(),
        customer: d.customer,
        customer_name: c.and_then(|c| c.name.clone()),
        entry: d.entry.clone(),
        layer: d.layer.map(String::from),
        rule: d.rule,
        monitored: d.monitored.iter().map(|m| m.to_string()).collect(),
        note: limited.then(|| {
            "rate limits are evaluated as within their limit here (the live token buckets are not read)".into()
        }),
    }
}

fn run<B: MapBackend>(
    agent: &Agent<B>,
    state: &mut AgentState<B>,
    frame: &[u8],
) -> Result<Explanation, ApiError> {
    let cfg = agent.config();
    let caps = cfg.capacities();
    let tracer = state
        .host
        .tracer(&cfg.pin_dir, caps)
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let d = tracer
        .run(frame, |id| state.dp.entry_key(id).copied())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| {
            bad(format!(
                "a frame of {} bytes is shorter than an Ethernet header",
                frame.len()
            ))
        })?;
    Ok(explanation(state, &d))
}

pub(crate) async fn explain<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Json(spec): Json<ProbeSpec>,
) -> Result<Json<Explanation>, ApiError> {
    let frame = probe(&spec)?.frame().map_err(bad)?;
    let a = agent.clone();
    blocking(&agent, move |state| run(&a, state, &frame).map(Json)).await
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) async fn simulate<B: MapBackend + Send + 'static>(
    State(agent): State<Arc<Agent<B>>>,
    Json(req): Json<SimulateFrames>,
) -> Result<Json<Vec<Explanation>>, ApiError> {
    let frames: Vec<Vec<u8>> = req
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| unhex(f).ok_or_else(|| bad(format!("frame {}: not hex", i + 1))))
        .collect::<Result<_, _>>()?;
    let a = agent.clone();
    blocking(&agent, move |state| {
        frames
            .iter()
            .map(|f| run(&a, state, f))
            .collect::<Result<Vec<_>, _>>()
            .map(Json)
    })
    .await
}
