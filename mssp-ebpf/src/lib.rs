//! The parts of mssp's XDP program other programs reuse: the packet parser, the
//! branch-free comparisons, and the rule loop's context (which the program's maps and rules
//! both name). The program itself
//! is the `mssp-xdp` binary target (`main.rs`); `mssp-core` embeds it. Being a library also
//! lets `mssp-core` name this crate as a build dependency, so cargo rebuilds the embedded
//! object when these sources change.
#![no_std]

pub mod arith;
pub mod parse;
pub mod rule_ctx;
