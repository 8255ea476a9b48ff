//! mssp: the policy model and compiler, the publisher that writes policy into the XDP
//! program's maps, and the pieces the `mssp` binary wires together.

pub mod cli;
pub mod compile;
pub mod dataplane;
pub mod loader;
pub mod policy;
pub mod simulate;
