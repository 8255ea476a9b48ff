//! What the mssp XDP program and its userspace must agree on: map layouts, value encodings,
//! reason and verdict codes, capacities — and, with the `alloc` feature, a reference classifier
//! that implements the evaluation contract independently of the kernel code.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod abi;
pub mod net;
pub mod proto;
pub mod reason;

#[cfg(feature = "alloc")]
pub mod reference;

pub use net::Net;
pub use reason::{Reason, Verdict};
