//! The audit trail: every change — a CLI edit, a push, a reload, an expiry, an automatic
//! mitigation — is one structured line in the journal (`mssp audit {json}`), naming who made
//! it (the socket peer's user and the name the CLI passed, or the controller's certificate),
//! what it changed, the ticket or comment, and the result.

use serde::Serialize;
use serde_json::Value;

/// One change and how it ended.
#[derive(Serialize)]
pub struct Event<'a> {
    pub who: &'a str,
    /// The operation: `block add`, `push`, `reload`, `expiry`, ...
    pub what: &'a str,
    /// What it names: scope, prefix, rule, version, ...
    #[serde(skip_serializing_if = "Value::is_null")]
    pub target: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<&'a str>,
    /// "ok" or "refused: …"/"failed: …".
    pub result: String,
}

/// Writes the event as one journal line.
pub fn record(e: &Event<'_>) {
    match serde_json::to_string(e) {
        Ok(line) => log::info!(target: "mssp::audit", "audit {line}"),
        Err(err) => log::error!(target: "mssp::audit", "audit event not encodable: {err}"),
    }
}

/// `ok`, or what went wrong.
pub fn outcome<T, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    }
}
