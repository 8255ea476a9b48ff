//! What the mssp XDP program and its userspace must agree on: map layouts, value encodings,
//! reason and verdict codes, capacities — and, with the `alloc` feature, a reference classifier
//! that implements the evaluation contract independently of the kernel code.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod abi;
pub mod filter;
pub mod model;
pub mod net;
pub mod proto;
pub mod reason;

#[cfg(feature = "alloc")]
pub mod reference;

pub use model::{Layer, Scope};
pub use net::Net;
pub use reason::{Reason, Verdict};
