//! Where the agent's maps live and how its program reaches interfaces: the kernel (the
//! loaded, pinned program attached through pinned links) or nothing at all (an agent over
//! in-memory maps, for unit tests of the local API and metrics).

use std::collections::HashMap;

use aya::Ebpf;
use mssp_core::pins::{self, Attached, PinError, PinSpec};

/// Attaching the program to interfaces.
pub trait Host: Send {
    /// Puts the program on every interface of `spec` (swapping it in under existing links),
    /// removing the links of interfaces no longer listed.
    fn attach(
        &mut self,
        spec: &PinSpec,
        known_modes: &HashMap<String, String>,
    ) -> Result<Vec<Attached>, PinError>;
}

/// The loaded program, pinned under `pin_dir`.
pub struct KernelHost {
    pub ebpf: Ebpf,
}

impl Host for KernelHost {
    fn attach(
        &mut self,
        spec: &PinSpec,
        known_modes: &HashMap<String, String>,
    ) -> Result<Vec<Attached>, PinError> {
        pins::attach_all(&mut self.ebpf, spec, known_modes)
    }
}

/// No kernel: nothing is attached anywhere (unit tests over [`mssp_core::dataplane::backend::MemBackend`]).
pub struct NoHost;

impl Host for NoHost {
    fn attach(
        &mut self,
        _spec: &PinSpec,
        _known_modes: &HashMap<String, String>,
    ) -> Result<Vec<Attached>, PinError> {
        Ok(Vec::new())
    }
}
