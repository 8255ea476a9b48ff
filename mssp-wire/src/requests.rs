//! What the CLI sends to the agent's local API. Unknown fields are refused on the agent's
//! side, so a CLI and an agent of different versions fail loudly instead of ignoring a flag.

use serde::{Deserialize, Serialize};

/// A customer named by its id or by its name (`--customer 7`, `--customer acme`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum CustomerRef {
    Id(u32),
    Name(String),
}

impl CustomerRef {
    /// A number is an id, anything else a name.
    pub fn parse(s: &str) -> CustomerRef {
        match s.parse::<u32>() {
            Ok(id) if !s.starts_with('+') => CustomerRef::Id(id),
            _ => CustomerRef::Name(s.to_string()),
        }
    }

    /// The id, if given as one (a name that is all digits counts as an id).
    pub fn as_id(&self) -> Option<u32> {
        match self {
            CustomerRef::Id(id) => Some(*id),
            CustomerRef::Name(n) => n.parse().ok(),
        }
    }
}

impl std::fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CustomerRef::Id(id) => write!(f, "{id}"),
            CustomerRef::Name(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for CustomerRef {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(CustomerRef::parse(s))
    }
}

/// `POST /v1/blocks`: add (or replace) a local entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockAdd {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub global: bool,
    /// `drop` (default), `allow` or `monitor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// A duration such as "10m", "2h", "1d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The operator's name as the CLI knows it ($SUDO_USER, $USER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `DELETE /v1/blocks`: remove a local entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockDel {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub global: bool,
}

/// `POST /v1/rules`: add (or replace, by id) a local rule, written as in the policy document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleAdd {
    pub customer: CustomerRef,
    pub rule: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `DELETE /v1/rules`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleDel {
    pub customer: CustomerRef,
    pub id: u32,
}

/// Query of `GET /v1/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
}

/// Query of `GET /v1/blocks`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScopeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub global: bool,
}

/// Query of `GET /v1/rules`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesQuery {
    pub customer: CustomerRef,
}

/// Query of `GET /v1/policy`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyQuery {
    #[serde(default)]
    pub full: bool,
}

/// `POST /v1/policy/reset-version`: lower the central layer's high-water version, so a
/// controller can push again after a version it cannot exceed got in (2^64 - 1, say).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResetVersion {
    /// The version the central layer in force is known as from now on.
    pub to: u64,
    /// The operator confirmed (`--yes`).
    pub confirm: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `POST /v1/blocks/batch`: several local entries, added all or none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockBatch {
    pub entries: Vec<BlockAdd>,
}

/// `POST /v1/blocks/flush`: remove every local entry of one list.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockFlush {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub global: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Query of `GET /v1/blocks/find`: which entries cover an address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FindQuery {
    pub ip: String,
}

/// `POST /v1/explain`: one packet by its fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    pub src: String,
    pub dst: String,
    /// A name (`udp`, `tcp`, `icmp`, …) or a number; `udp` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// TCP flags set (`syn`, `ack`, …); `syn` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// IP total length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// `POST /v1/simulate`: frames (hex) through the live policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimulateFrames {
    pub frames: Vec<String>,
}

/// Query of `GET /v1/attacks`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttacksQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    /// Ended attacks too (the history), not only active ones.
    #[serde(default)]
    pub all: bool,
}

/// Query of `GET /v1/monitor` (a stream of sampled packets, one JSON object per line).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MonitorQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    /// Only packets decided for this reason (`rule`, `customer_block`, ...), or `drop` /
    /// `pass` for a verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Query of `GET /v1/top`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
}

/// Query of `GET /v1/detection`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetectionQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
}

/// `PUT /v1/detection`: the local layer's detection settings for a customer or for every
/// customer that sets none (`default`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectionSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub default: bool,
    /// The `detection` object, as in the policy.
    pub detection: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `DELETE /v1/detection`: back to the central policy's settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetectionClear {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `POST /v1/filter` (add) and `DELETE /v1/filter` (del): a name in the local layer's
/// filtering list of a customer, or of every customer (`global`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterEdit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub global: bool,
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `GET /v1/filter` and `GET /v1/filter/test`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilterQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    #[serde(default)]
    pub global: bool,
    /// `test` only: the name to decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
