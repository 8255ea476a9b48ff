//! The one error body every mssp API answers with.

use serde::{Deserialize, Serialize};

/// An error reply: always `error`, plus what the particular refusal adds (the version in
/// force for a push conflict, every field error of an invalid document).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
    /// The version (and digest) still in force, where that is what the caller needs next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Each problem of an invalid document (the first 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldErrorView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_total: Option<usize>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            ..ErrorBody::default()
        }
    }
}

/// One problem in a document: the field path, the value found there and what is wrong.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FieldErrorView {
    pub path: String,
    #[serde(default)]
    pub value: serde_json::Value,
    pub message: String,
}
