//! Why the agent stopped (or a change was refused), and the exit code each reason gets.

use mssp_core::{
    dataplane::{AdoptError, DataplaneError},
    pins::PinError,
};
use mssp_wire::exit;

use crate::{config::ConfigError, store::StateError};

/// Exit codes (sysexits): bad config 64, bad state or policy data 65, pins we must not
/// touch 75 (temporary: needs an operator), anything else 1.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("initial policy {file}: {message}")]
    InitialPolicy { file: String, message: String },
    #[error("{0}")]
    Pins(#[from] PinError),
    #[error("{0}")]
    Adopt(#[from] AdoptError),
    #[error("publishing the policy failed: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Other(String),
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) | AgentError::Pins(PinError::Dir { .. }) => exit::USAGE,
            AgentError::State(_) | AgentError::InitialPolicy { .. } => exit::DATAERR,
            AgentError::Pins(
                PinError::Incompatible { .. }
                | PinError::MapMismatch { .. }
                | PinError::Busy { .. },
            )
            | AgentError::Adopt(_) => exit::TEMPFAIL,
            _ => exit::FAILURE,
        }
    }
}
