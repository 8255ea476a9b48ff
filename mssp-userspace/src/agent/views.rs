//! What the local API returns (and the CLI prints): plain serde types shared by both sides.

use serde::{Deserialize, Serialize};

use crate::{dataplane::Fill, pins::Attached};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerVersion {
    pub version: u64,
    pub digest: Option<String>,
    pub applied_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApplyView {
    pub at: String,
    pub duration_ms: f64,
    pub trigger: String,
    pub customers_changed: usize,
    pub customers_removed: usize,
    pub root_changed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FillView {
    pub map: String,
    pub used: u32,
    pub capacity: u32,
}

impl From<&Fill> for FillView {
    fn from(f: &Fill) -> Self {
        FillView {
            map: f.name.into(),
            used: f.used,
            capacity: f.capacity,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    pub version: String,
    pub pid: u32,
    pub started: String,
    pub uptime_seconds: u64,
    pub pin_dir: String,
    pub abi: u32,
    pub interfaces: Vec<Attached>,
    pub central: LayerVersion,
    pub local_entries: usize,
    pub customers: usize,
    pub last_apply: Option<ApplyView>,
    pub last_error: Option<String>,
    pub maps: Vec<FillView>,
}

/// One source entry as the NOC sees it, from either layer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlockView {
    /// "global" or "customer:ID".
    pub scope: String,
    pub prefix: String,
    pub action: String,
    /// "central" (pushed) or "local" (CLI).
    pub layer: String,
    /// Whether the data path enforces it now (false: expired, overridden by a local entry for
    /// the same prefix, or its customer is not in the central policy).
    pub enforced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub who: String,
    pub added: String,
    pub hits_packets: u64,
    pub hits_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CounterView {
    pub verdict: String,
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CustomerStats {
    /// None: traffic for no customer.
    pub customer: Option<u32>,
    pub name: Option<String>,
    pub counters: Vec<CounterView>,
    pub passed_packets: u64,
    pub dropped_packets: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatsView {
    pub customers: Vec<CustomerStats>,
}

/// One rule as the NOC sees it, from either layer, in evaluation order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RuleView {
    pub customer: u32,
    pub id: u32,
    /// "central" or "local".
    pub layer: String,
    /// Position in the evaluation order (1 = first), when enforced.
    pub order: Option<usize>,
    pub enforced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The rule as written (document shape).
    pub rule: serde_json::Value,
    pub who: String,
    pub added: String,
    pub packets: u64,
    pub bytes: u64,
    pub limited_packets: u64,
}

/// An error reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorView {
    pub error: String,
}
