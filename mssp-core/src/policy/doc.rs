//! The policy document (version 1 of the contract) exactly as it travels: JSON, unknown fields
//! refused. Validation into the typed [`super::Policy`] happens in `validate.rs`.

use mssp_common::abi::SourceAction;
use serde::{Deserialize, Serialize};

use super::strict;

use super::detection::DetectionDoc;
use super::filtering::FilteringDoc;
use super::rules_doc::{LimitsDoc, RuleDoc};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "a policy document: an object with version, infrastructure, global, customers and detection"
)]
pub struct PolicyDoc {
    /// Monotonically increasing per controller; a push must carry a larger one.
    pub version: u64,
    /// The ISP's own prefixes (routers, BGP peers, NOC): always pass.
    #[serde(default)]
    pub infrastructure: Vec<String>,
    #[serde(default)]
    pub global: GlobalDoc,
    #[serde(default)]
    pub customers: Vec<CustomerDoc>,
    /// Attack detection for customers that set none.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub detection: Option<DetectionDoc>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "an object with the global sources and filtering"
)]
pub struct GlobalDoc {
    #[serde(default)]
    pub sources: Vec<SourceDoc>,
    /// ISP-wide content filtering (feeds of phishing and malware names), for every customer.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub filtering: Option<FilteringDoc>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "a source entry: an object with prefix, action and optionally expires, comment"
)]
pub struct SourceDoc {
    pub prefix: String,
    pub action: SourceAction,
    /// RFC 3339; the entry is not in effect from then on.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<String>,
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
    expecting = "a customer: an object with id, name, prefixes, sources, rules, limits, detection, filtering"
)]
pub struct CustomerDoc {
    pub id: u32,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub sources: Vec<SourceDoc>,
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<LimitsDoc>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub detection: Option<DetectionDoc>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub filtering: Option<FilteringDoc>,
}

crate::strict_struct!(PolicyDoc);
crate::strict_struct!(GlobalDoc);
crate::strict_struct!(SourceDoc);
crate::strict_struct!(CustomerDoc);
