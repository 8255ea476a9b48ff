//! Attack detection for one edge, as pure logic over what the data path reports (no kernel,
//! no I/O): the agent feeds it meter readings and sampled packets and applies what it
//! decides.
//!
//! * [`observed`]: a sampled packet, decoded.
//! * [`rates`]: per-destination rates over one-second windows from cumulative meters.
//! * [`reservoir`]: a bounded uniform sample of a customer's traffic before an attack.
//! * [`fingerprint`]: the most specific match that covers an attack's samples, with its
//!   coverage and its collateral on the earlier traffic.
//! * [`plan`]: what to install — the sources, the fingerprint, a rate limit, or the
//!   fallback at a cap.
//! * [`engine`]: attacks start (thresholds over enough consecutive windows) and end (under
//!   half of every threshold for the hold time), mitigations extended while they last.

pub mod engine;
pub mod fingerprint;
pub mod observed;
pub mod plan;
pub mod rates;
pub mod reservoir;

pub use engine::{Engine, EngineConfig, Event, Protected, Settings};
pub use observed::Observed;

#[cfg(test)]
mod tests;
