//! The `rules` and `limits` of a customer, as the document carries them. Fields that accept
//! several shapes (a name or a number, one value or a list) stay JSON values here so that
//! validation can name the exact element that is wrong.

use serde::{Deserialize, Serialize};

use super::strict;
use serde_json::Value;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "a rule: an object with id, match, action and optionally comment"
)]
pub struct RuleDoc {
    pub id: u32,
    #[serde(rename = "match", default)]
    pub matches: MatchDoc,
    /// `"drop"`, `"pass"`, `"monitor"` or `{"rate_limit": {...}}`.
    #[serde(deserialize_with = "strict::value")]
    pub action: Value,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "a match: an object of match fields (protocol, sources, dst_ports, ...)"
)]
pub struct MatchDoc {
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sources: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub destinations: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub src_ports: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub dst_ports: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_flags: Option<TcpFlagsDoc>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_type: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_code: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub length: Option<RangeDoc>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<RangeDoc>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub dscp: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub fragment: Option<Value>,
    #[serde(
        default,
        deserialize_with = "strict::present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub vlan: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "an object with set and unset flag lists"
)]
pub struct TcpFlagsDoc {
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "a range: an object with min, max or both"
)]
pub struct RangeDoc {
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub min: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "a rate limit: an object with pps, bps, burst, burst_bytes, per_source"
)]
pub struct RateLimitDoc {
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub pps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub bps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub burst: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub burst_bytes: Option<u64>,
    #[serde(default)]
    pub per_source: bool,
}

/// A customer's clean-pipe cap.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "limits: an object with pps, bps or both"
)]
pub struct LimitsDoc {
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub pps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub bps: Option<u64>,
}

crate::strict_struct!(RuleDoc);
crate::strict_struct!(MatchDoc);
crate::strict_struct!(TcpFlagsDoc);
crate::strict_struct!(RangeDoc);
crate::strict_struct!(RateLimitDoc);
crate::strict_struct!(LimitsDoc);
