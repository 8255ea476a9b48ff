//! The policy: the document as it travels ([`doc`]), its validation into typed, checked
//! values ([`validate`]), and the errors a refused document gets. Pure Rust, no kernel.

pub mod cidr;
pub mod detection;
pub mod doc;
pub mod filtering;
pub mod rules;
pub mod rules_doc;
pub mod strict;
mod validate;

use std::fmt;

use mssp_common::{Net, abi::SourceAction};
use time::OffsetDateTime;

pub use doc::PolicyDoc;
pub use validate::{Capacity, parse_policy, validate, validate_owned};

/// A document as the agent reports it (`GET /v1/policy?full=true`), validated with no capacity
/// limit (it is in force already).
pub fn doc_from_value(v: serde_json::Value) -> Result<Policy, PolicyError> {
    let doc: PolicyDoc =
        serde_json::from_value(v).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    validate(
        &doc,
        &Capacity {
            customers: u32::MAX,
            source_entries: u32::MAX,
        },
    )
}

/// `sha256:<hex>` of a policy document's bytes: what the agent reports and `mssp push`
/// checks, so both ends agree on exactly which document is in force.
pub fn document_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let h = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in h {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One problem in a document: where (a field path such as `customers[0].sources[1].prefix`)
/// and what (naming the bad value and, where possible, what would be right).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a policy document was refused. Nothing is applied when this is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy is not valid JSON: {0}")]
    Syntax(String),
    #[error("policy is truncated: {0}")]
    Truncated(String),
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&e.to_string());
    }
    out
}

impl PolicyError {
    /// The individual problems (one for syntax errors).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PolicyError::Invalid(v) => v.clone(),
            other => vec![FieldError {
                path: String::new(),
                message: other.to_string(),
            }],
        }
    }
}

/// A source entry (global or per customer) as validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    pub net: Net,
    pub action: SourceAction,
    pub expires: Option<OffsetDateTime>,
    pub comment: Option<String>,
}

impl SourceEntry {
    pub fn in_effect(&self, now: OffsetDateTime) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub id: u32,
    pub name: Option<String>,
    pub prefixes: Vec<Net>,
    pub sources: Vec<SourceEntry>,
    pub rules: Vec<rules::RuleSpec>,
    pub limits: Option<rules::Limits>,
    /// The customer's own detection settings (else the policy's default applies).
    pub detection: Option<detection::Detection>,
    /// The customer's content filtering (names its users may not reach).
    pub filtering: Option<filtering::Filtering>,
}

/// A validated policy document.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub version: u64,
    pub infrastructure: Vec<Net>,
    pub global: Vec<SourceEntry>,
    pub customers: Vec<Customer>,
    /// Detection for customers that set none.
    pub detection: Option<detection::Detection>,
    /// ISP-wide content filtering (`global.filtering`), for every customer.
    pub global_filtering: Option<filtering::Filtering>,
    /// The document it came from, for `policy show` and the state directory.
    pub doc: PolicyDoc,
    /// `doc` without its source lists, which a stored copy of the whole document holds
    /// (see [`Policy::slim_doc`]).
    pub doc_slim: bool,
    /// Customer id -> position in `customers` (a linear search per customer made building
    /// the desired state quadratic: ~150 ms of every CLI edit at 10k customers).
    pub(crate) by_id: std::collections::HashMap<u32, usize>,
}

impl Policy {
    /// An empty policy at version 0 (what an agent holds before any push).
    pub fn empty() -> Policy {
        Policy {
            version: 0,
            infrastructure: Vec::new(),
            global: Vec::new(),
            customers: Vec::new(),
            detection: None,
            global_filtering: None,
            doc: PolicyDoc::default(),
            doc_slim: false,
            by_id: Default::default(),
        }
    }

    /// Drops the document's source lists (~110 MiB at a million entries) once the whole
    /// document is stored elsewhere; `doc` keeps the rest (names, prefixes, rules, settings)
    /// and the validated policy keeps every entry.
    /// Returns the lists, for the caller to free where it suits it (a million strings take
    /// tens of milliseconds to free).
    pub fn slim_doc(&mut self) -> Vec<Vec<doc::SourceDoc>> {
        let mut dropped = vec![std::mem::take(&mut self.doc.global.sources)];
        for c in &mut self.doc.customers {
            dropped.push(std::mem::take(&mut c.sources));
        }
        self.doc_slim = true;
        dropped
    }

    /// The index of [`Policy::by_id`] for these customers.
    pub(crate) fn index(customers: &[Customer]) -> std::collections::HashMap<u32, usize> {
        customers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect()
    }

    pub fn customer(&self, id: u32) -> Option<&Customer> {
        match self.by_id.get(&id).and_then(|&i| self.customers.get(i)) {
            Some(c) if c.id == id => Some(c),
            // Not indexed (or `customers` was edited after validation): search.
            _ => self.customers.iter().find(|c| c.id == id),
        }
    }

    /// The central layer's detection for a customer: its own, else the policy's default.
    pub fn detection_of(&self, id: u32) -> Option<&detection::Detection> {
        self.customer(id)
            .and_then(|c| c.detection.as_ref())
            .or(self.detection.as_ref())
    }

    /// The reference classifier's view of this policy.
    pub fn to_reference(&self) -> mssp_common::reference::RefPolicy {
        use mssp_common::reference::{RefCustomer, RefPolicy, RefSource};
        let src = |s: &SourceEntry| RefSource {
            net: s.net,
            action: s.action,
            expires_unix_ns: s.expires.map(|e| e.unix_timestamp_nanos().max(0) as u64),
        };
        RefPolicy {
            infrastructure: self.infrastructure.clone(),
            global: self.global.iter().map(src).collect(),
            customers: self
                .customers
                .iter()
                .map(|c| RefCustomer {
                    id: c.id,
                    prefixes: c.prefixes.clone(),
                    sources: c.sources.iter().map(src).collect(),
                    rules: c.rules.iter().map(rules::RuleSpec::to_reference).collect(),
                })
                .collect(),
        }
    }
}
