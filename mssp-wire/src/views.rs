//! What the agent's local API and push API return, and the CLI prints.

use serde::{Deserialize, Serialize};

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

/// How an interface is being filtered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceView {
    pub name: String,
    pub ifindex: u32,
    /// "native" or "skb".
    pub mode: String,
    pub link_id: u32,
    pub prog_id: u32,
    /// The link existed and the program was swapped in under it.
    pub adopted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    pub version: String,
    pub pid: u32,
    pub started: String,
    pub uptime_seconds: u64,
    pub pin_dir: String,
    pub abi: u32,
    pub interfaces: Vec<InterfaceView>,
    /// Configured interfaces that do not exist: not filtered (the agent retries).
    #[serde(default)]
    pub missing_interfaces: Vec<String>,
    /// Whether the kernel does what this agent believes: every configured interface runs
    /// this agent's program through its pinned link, and every customer's published record
    /// is the one the agent published. When false, `drift` says why.
    #[serde(default)]
    pub enforced: bool,
    #[serde(default)]
    pub drift: Vec<String>,
    pub central: LayerVersion,
    pub local_entries: usize,
    pub customers: usize,
    pub last_apply: Option<ApplyView>,
    pub last_error: Option<String>,
    pub maps: Vec<FillView>,
    /// With `[fleet]`: this edge's fleet client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetClientView>,
    /// With `customer_interfaces`: content filtering's inspector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtering: Option<FilteringStatusView>,
}

/// Content filtering in `mssp status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FilteringStatusView {
    pub interfaces: Vec<String>,
    pub inspector_running: bool,
    pub inspector_pid: Option<u32>,
    pub restarts: u64,
    pub last_exit: Option<String>,
    /// Every packet passes uninspected now (inspector down or stalled).
    pub fail_open: bool,
    pub heartbeat_age_ms: Option<u64>,
    /// (interface, queue, "copy" | "zerocopy").
    pub sockets: Vec<(String, u32, String)>,
    pub inject_device: Option<String>,
    pub inspected: u64,
    pub blocked: u64,
    pub allowed: u64,
}

/// The edge's end of the fleet, in `mssp status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetClientView {
    pub edge: String,
    pub nats_url: String,
    pub connected: bool,
    /// The highest decision version processed.
    pub fleet_version: u64,
    /// Decisions in force in the fleet layer.
    pub decisions: usize,
    pub applied: u64,
    pub apply_failed: u64,
    /// Messages refused as not signed by the controller's key.
    pub bad_signature: u64,
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
    /// "central", "auto", "fleet" or "local".
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
    /// When an auto (or fleet) rule stops (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// The local layer entry a `DELETE /v1/blocks` removed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockRemoved {
    pub removed: String,
    /// "global" or "customer:ID".
    pub scope: String,
}

/// The local rule a `DELETE /v1/rules` removed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleRemoved {
    pub removed: u32,
    pub customer: u32,
}

/// `GET /v1/policy` (local API and push API): the central layer in force.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyVersion {
    pub version: u64,
    pub digest: Option<String>,
    pub applied_at: Option<String>,
    pub source: Option<String>,
    /// The whole document (`?full=true` on the local API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
    /// The other layers in force beside the central one (local API only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerSummary>,
}

/// A policy layer other than the central one: its version and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerSummary {
    /// "local", "fleet", "auto".
    pub layer: String,
    pub version: u64,
    pub entries: usize,
    pub rules: usize,
    /// Everything it holds (`?full=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}

/// `PUT /v1/policy` on the push API: 200 once the data plane enforces the document and it
/// is persisted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PushApplied {
    pub version: u64,
    pub digest: String,
    pub applied_at: Option<String>,
    /// Time to receive the body, validate it and apply it; the whole request.
    pub received_ms: f64,
    pub validate_ms: f64,
    pub apply_ms: f64,
    pub elapsed_ms: f64,
    pub customers_changed: usize,
    pub customers_removed: usize,
}

/// `mssp policy validate --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyValidation {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_entries: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::FieldErrorView>,
}

/// `POST /v1/reload`: what a reload changed (it applies wholly or not at all).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadResult {
    pub message: String,
}

/// `POST /v1/policy/reset-version`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionReset {
    pub from: u64,
    pub to: u64,
}

/// What the data path decides for one packet (`mssp explain`, `mssp simulate --live`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Explanation {
    /// "pass" or "drop".
    pub action: String,
    pub reason: String,
    pub customer: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    /// The source entry that decided, and its layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitored: Vec<String>,
    /// What the answer cannot say (a rate limit's live state, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /v1/blocks/batch`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockBatchResult {
    pub added: usize,
}

/// `POST /v1/blocks/flush`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockFlushed {
    pub removed: usize,
    pub scope: String,
}

/// What changes between the central policy in force and a document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyDiff {
    pub from_version: u64,
    pub to_version: u64,
    pub infrastructure_added: Vec<String>,
    pub infrastructure_removed: Vec<String>,
    pub global_added: usize,
    pub global_removed: usize,
    pub global_changed: usize,
    pub customers_added: Vec<u32>,
    pub customers_removed: Vec<u32>,
    pub customers_changed: Vec<CustomerDiff>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerDiff {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub prefixes_added: Vec<String>,
    pub prefixes_removed: Vec<String>,
    pub sources_added: usize,
    pub sources_removed: usize,
    pub sources_changed: usize,
    pub rules_added: usize,
    pub rules_removed: usize,
    pub rules_changed: usize,
    pub limits_changed: bool,
}

/// `POST /v1/policy/check` and `PUT /v1/policy?dry_run=true`: whether this agent would
/// apply the document (with its layers and capacities), and what it would change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyCheck {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::FieldErrorView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<PolicyDiff>,
}
