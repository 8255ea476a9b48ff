//! Attacks as the agent records them, lists them (`mssp attacks`), persists them in its
//! state directory and reports them upstream: what was seen, when, how hard, what was
//! installed against it (in the policy's own rule syntax) and how well that fits.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackState {
    Active,
    Ended,
}

/// One mitigation an attack got (or, in monitor mode, would have got).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MitigationItem {
    /// `"rule"` (a rule of the customer, `rule` holds it in the policy syntax) or
    /// `"source"` (a source entry of the customer, `prefix` and `action`).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// False in monitor mode (recorded, never enforced) and once removed.
    pub installed: bool,
}

/// How the chosen match fits the attack: the share of the attack's samples it matches and
/// the share of the customer's earlier traffic to the target it would also match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FingerprintView {
    /// The match, as a rule's `match` object.
    #[serde(rename = "match")]
    pub matches: Value,
    pub coverage: f64,
    /// `null` when too few earlier samples were at hand to estimate it.
    pub collateral: Option<f64>,
    pub attack_samples: u64,
    pub baseline_samples: u64,
    /// Why this mitigation: "few stable sources", "fingerprint", "rate limit (collateral
    /// 31%)", "cap: ...".
    pub decision: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopSource {
    pub source: String,
    /// Estimated from the samples (samples x sampling rate / time).
    pub pps: f64,
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attack {
    pub id: String,
    pub customer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    /// The destination address attacked.
    pub target: String,
    pub state: AttackState,
    /// `"monitor"` or `"mitigate"`.
    pub mode: String,
    /// The thresholds exceeded, e.g. `["pps", "udp_pps"]`.
    pub metrics: Vec<String>,
    /// The first moment over a threshold (a quarter-second tick).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub mitigated_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub peak_pps: f64,
    pub peak_bps: f64,
    /// Packets the auto rules and entries of this attack dropped.
    pub dropped_packets: u64,
    pub mitigation: Vec<MitigationItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<FingerprintView>,
    pub top_sources: Vec<TopSource>,
    /// The edge that saw it (set when the fleet is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
}

/// One line of the attack event log (`attacks.log`, JSON lines): what a customer's attack
/// report is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `"start"`, `"mitigated"`, `"peak"`, `"end"`.
    pub event: String,
    pub attack: String,
    pub customer: u32,
    pub target: String,
    pub pps: f64,
    pub bps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// `GET /v1/attacks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackList {
    pub attacks: Vec<Attack>,
}

/// One sampled packet, as `mssp monitor` prints it (and `GET /v1/monitor` streams it, one
/// JSON object per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampledPacket {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub verdict: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    /// The deciding source entry (`layer`, `prefix`), when one decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Value>,
    /// The deciding rule (`layer`, `id`), when one decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Value>,
    pub src: String,
    pub dst: String,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    pub length: u32,
    /// One in `sampling` packets is sampled.
    pub sampling: u32,
}

/// `GET /v1/top`: what flows now, per customer and per target, with the top sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopView {
    /// The window the rates are over, in seconds.
    pub window_seconds: f64,
    pub customers: Vec<TopCustomer>,
    pub targets: Vec<TopTarget>,
    pub sources: Vec<TopSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopCustomer {
    pub customer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub pps: f64,
    pub bps: f64,
    pub dropped_pps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopTarget {
    pub customer: u32,
    pub target: String,
    pub pps: f64,
    pub bps: f64,
    pub udp_pps: f64,
    pub syn_pps: f64,
    pub icmp_pps: f64,
    pub frag_pps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<String>,
}

/// `GET /v1/detection`: each customer's detection settings in force and where they come
/// from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionView {
    pub customer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"local"`, `"central"`, `"local default"`, `"central default"` or `"none"`.
    pub source: String,
    /// The settings in force, as in the policy (`mode` "off" when none).
    pub detection: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
}
