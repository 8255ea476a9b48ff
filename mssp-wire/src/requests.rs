//! What the CLI sends to the agent's local API. Unknown fields are refused on the agent's
//! side, so a CLI and an agent of different versions fail loudly instead of ignoring a flag.

use serde::{Deserialize, Serialize};

/// `POST /v1/blocks`: add (or replace) a local entry.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockAdd {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
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
    pub customer: Option<u32>,
    #[serde(default)]
    pub global: bool,
}

/// `POST /v1/rules`: add (or replace, by id) a local rule, written as in the policy document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleAdd {
    pub customer: u32,
    pub rule: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `DELETE /v1/rules`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleDel {
    pub customer: u32,
    pub id: u32,
}

/// Query of `GET /v1/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
}

/// Query of `GET /v1/blocks`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScopeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
    #[serde(default)]
    pub global: bool,
}

/// Query of `GET /v1/rules`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesQuery {
    pub customer: u32,
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
