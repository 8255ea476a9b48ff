//! Empty on purpose: `mssp-ebpf` is a binary for `bpfel-unknown-none`. This library target
//! exists so `mssp-userspace` can name the crate as a build dependency, which makes cargo
//! rebuild the embedded object when the program's sources change.
#![no_std]
