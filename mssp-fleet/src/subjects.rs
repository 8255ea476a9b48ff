//! Streams and subjects. Decisions keep one message per decision id (the latest), so an
//! edge that reads the stream from its start gets the current fleet state and then every
//! change, in order; acks keep one per (edge, decision); heartbeats one per edge; reports
//! are a bounded log.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::{FleetError, nats_err};

pub const DECISIONS: &str = "MSSP_DECISIONS";
pub const ACKS: &str = "MSSP_ACKS";
pub const REPORTS: &str = "MSSP_REPORTS";
pub const EDGES: &str = "MSSP_EDGES";

pub fn decision(id: &str) -> String {
    format!("mssp.fleet.decision.{id}")
}
pub const DECISION_ALL: &str = "mssp.fleet.decision.*";

pub fn ack(edge: &str, decision: &str) -> String {
    format!("mssp.fleet.ack.{edge}.{decision}")
}
pub const ACK_ALL: &str = "mssp.fleet.ack.*.*";

pub fn report(edge: &str) -> String {
    format!("mssp.fleet.report.{edge}")
}
pub const REPORT_ALL: &str = "mssp.fleet.report.*";

pub fn heartbeat(edge: &str) -> String {
    format!("mssp.fleet.heartbeat.{edge}")
}
pub const HEARTBEAT_ALL: &str = "mssp.fleet.heartbeat.*";

/// Edge names and decision ids are one subject token: letters, digits, `-` and `_`, 1 to
/// 64 of them.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn config(name: &str, subject: &str, per_subject: i64, max_age: Duration) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        max_messages_per_subject: per_subject,
        max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Creates the fleet's streams if they are missing (the controller does this; edges only
/// read and publish).
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), FleetError> {
    let day = Duration::from_secs(86_400);
    for c in [
        config(DECISIONS, DECISION_ALL, 1, Duration::ZERO),
        config(ACKS, ACK_ALL, 1, 7 * day),
        config(REPORTS, REPORT_ALL, -1, 7 * day),
        config(EDGES, HEARTBEAT_ALL, 1, 30 * day),
    ] {
        js.get_or_create_stream(c).await.map_err(nats_err)?;
    }
    Ok(())
}
