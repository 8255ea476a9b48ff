//! The contract between mssp's processes: every request and reply the CLI, the agent's local
//! API, the push API (and the controller) exchange, as typed structs and enums that both sides
//! serialise and parse. A reply that does not parse into its type is an error on the reading
//! side, never a silent success.

pub mod attacks;
pub mod error;
pub mod exit;
pub mod fleet;
pub mod provenance;
pub mod requests;
pub mod views;

pub use error::{ErrorBody, FieldErrorView};
pub use mssp_common::{Layer, Scope, abi::SourceAction};
pub use provenance::Provenance;
