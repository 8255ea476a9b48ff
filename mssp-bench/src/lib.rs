//! mssp's benchmarks and the lab tools they share with the tests: generated policies and
//! traffic ([`policy_gen`]), the live-frames traffic generator ([`traffic`]), the lab PKI
//! ([`pki`]), the variants under test ([`variants`]), the control-plane figures
//! ([`control`]), what the machine allows ([`machine`]) and a whole run ([`run`]). `cargo
//! xtask bench` runs the `mssp-bench` binary; nothing here is in the shipped `mssp` binary.

pub mod control;
pub mod machine;
pub mod pki;
pub mod policy_gen;
pub mod run;
pub mod traffic;
pub mod variants;
