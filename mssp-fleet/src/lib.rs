//! The fleet on NATS JetStream, shared by the controller, the agents and the bench's edge
//! simulators (which run this same client with no data plane behind it).
//!
//! * [`subjects`]: the streams and subjects, and which names are valid in them.
//! * [`sign`]: the controller's ed25519 key; decisions signed and verified.
//! * [`edge`]: an edge's client — reads the current fleet state, then follows changes;
//!   verifies, applies, acknowledges; publishes reports and heartbeats.

pub mod edge;
pub mod sign;
pub mod subjects;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Key(String),
    #[error("decision refused: {0}")]
    Refused(String),
}

pub fn nats_err(e: impl std::fmt::Display) -> FleetError {
    FleetError::Nats(e.to_string())
}
