//! `mssp agent`: the daemon on each edge router. It adopts (or creates) the pinned data plane,
//! keeps the policy layers (central pushes, local CLI edits) in the state directory,
//! publishes their union, and serves the NOC's CLI (the local API), the metrics endpoint and
//! the push API. Generic over the map backend, so everything above the maps is tested on the
//! in-memory one.

pub mod agent;
pub mod api;
pub mod audit;
pub mod config;
pub mod detector;
pub mod diff;
pub mod error;
pub mod filtering;
pub mod fleet;
pub mod host;
pub mod idlog;
pub mod ips;
pub mod layers;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod push;
pub mod serve;
pub mod state;
pub mod store;
pub mod tls;
pub mod views;

#[cfg(test)]
mod tests;

pub use agent::{Agent, RunOptions};
pub use error::AgentError;
pub use lifecycle::{Listeners, run};
