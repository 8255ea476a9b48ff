//! The `rules` and `limits` of a customer, as the document carries them. Fields that accept
//! several shapes (a name or a number, one value or a list) stay JSON values here so that
//! validation can name the exact element that is wrong.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: u32,
    #[serde(rename = "match", default)]
    pub matches: MatchDoc,
    /// `"drop"`, `"pass"`, `"monitor"` or `{"rate_limit": {...}}`.
    pub action: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<TcpFlagsDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<RangeDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<RangeDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpFlagsDoc {
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RangeDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
    #[serde(default)]
    pub per_source: bool,
}

/// A customer's clean-pipe cap.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bps: Option<u64>,
}
