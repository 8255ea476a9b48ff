//! mssp: the policy model and compiler, the publisher that writes policy into the XDP
//! program's maps, the agent with its local API and metrics, and the pieces the `mssp` binary
//! wires together.

pub mod agent;
pub mod bench;
pub mod cli;
pub mod client;
pub mod compile;
pub mod config;
pub mod dataplane;
pub mod loader;
pub mod metrics;
pub mod pins;
pub mod policy;
pub mod push_client;
pub mod simulate;
pub mod tls;
pub mod traffic;
