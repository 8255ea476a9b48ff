//! The fleet's messages on NATS (decisions down to every edge; acks, attack reports and
//! heartbeats up to the controller) and the controller's local API. A decision travels as
//! [`Signed`]: its JSON bytes and the controller's ed25519 signature over exactly those
//! bytes, so an edge checks what it parses and a broker cannot forge or alter one.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::attacks::Attack;

/// What a decision enforces: a source entry or a rule (the policy's own syntax), for one
/// customer or, for entries, every customer (`customer: None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DecisionItem {
    Source {
        prefix: String,
        /// `drop` or `allow` or `monitor`.
        action: String,
    },
    Rule {
        rule: Value,
    },
}

/// One fleet decision. `removed` withdraws the decision of the same id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Unique in the fleet (`fb-…` blocks, `fr-…` rules, `fa-…` from correlated attacks).
    pub id: String,
    /// Grows with every decision the controller publishes (the stream's order is the truth;
    /// this is what acks name).
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
    pub item: DecisionItem,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    #[serde(default)]
    pub removed: bool,
    /// Why: who typed it, or which attack reports made it.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A decision as published: `payload` is the decision's JSON, `sig` the controller's
/// ed25519 signature over those bytes (both base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub payload: String,
    pub sig: String,
}

/// An edge's answer to one decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub edge: String,
    pub decision: String,
    /// The decision version applied (or refused).
    pub version: u64,
    /// The highest decision version this edge has processed.
    pub fleet_version: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// An edge's attack report (its detector's events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub edge: String,
    /// `start`, `mitigated`, `peak` or `end`.
    pub event: String,
    pub attack: Attack,
}

/// An edge's heartbeat, every few seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub edge: String,
    pub fleet_version: u64,
    pub central_version: u64,
    pub agent_version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// `POST /v1/fleet/blocks` on the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetBlockAdd {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
    #[serde(default)]
    pub global: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// "10m", "2h", "1d" (default 1h; fleet decisions always expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `POST /v1/fleet/rules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetRuleAdd {
    pub customer: u32,
    pub rule: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `DELETE /v1/fleet/decisions`: withdraw one decision by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetDel {
    pub id: String,
}

/// `mssp fleet status`: per edge and per decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub fleet_version: u64,
    pub edges: Vec<EdgeView>,
    pub decisions: Vec<DecisionView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    pub edge: String,
    /// A heartbeat within the last 15 s.
    pub connected: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub fleet_version: u64,
    /// Decisions behind the controller's version.
    pub lag: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    pub id: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
    pub item: DecisionItem,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub reason: String,
    /// Edges that acknowledged it ok.
    pub acked: usize,
    /// Edges known to the controller.
    pub edges: usize,
    /// Edges that refused it, with their error.
    pub refused: Vec<(String, String)>,
    pub missing: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ack_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack_s: Option<f64>,
}

/// `mssp fleet attacks`: the reports heard, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetAttacks {
    pub reports: Vec<Report>,
}
