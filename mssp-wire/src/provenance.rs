//! "Who did this": the one provenance record every entry, rule and change carries, whichever
//! layer it lives in.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Who made a change and when. Serialised as `who` and `added`, the names the state files
/// have always used, so files written by earlier agents still load.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provenance {
    /// The operator (the socket peer's user, and the name the CLI passed), the controller's
    /// certificate subject, or the detector.
    pub who: String,
    #[serde(rename = "added", with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Provenance {
    pub fn now(who: impl Into<String>) -> Provenance {
        Provenance {
            who: who.into(),
            at: OffsetDateTime::now_utc(),
        }
    }

    /// The operator as the agent records them: the socket peer's user name, and the name the
    /// CLI passed when it differs (`alice (as root)` for `sudo`).
    pub fn operator(peer: Option<String>, claimed: Option<&str>) -> String {
        match (peer, claimed) {
            (Some(u), Some(c)) if u != c => format!("{c} (as {u})"),
            (Some(u), _) => u,
            (None, Some(c)) => c.to_string(),
            (None, None) => "unknown".into(),
        }
    }
}
