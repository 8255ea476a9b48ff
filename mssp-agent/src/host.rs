//! Where the agent's maps live and how its program reaches interfaces: the kernel (the
//! loaded, pinned program attached through pinned links) or nothing at all (an agent over
//! in-memory maps, for unit tests of the local API and metrics).

use std::collections::HashMap;

use aya::Ebpf;
use mssp_core::{
    capacity::Capacities,
    pins::{self, AttachResult, Attached, PinError, PinLock, PinSpec},
    simulate::LiveTracer,
};

/// Attaching the program to interfaces, and checking that it still runs there.
pub trait Host: Send {
    /// Puts the program on every interface of `spec` (swapping it in under existing links),
    /// removing the links of interfaces no longer listed. With `allow_missing`, interfaces
    /// that do not exist are skipped and named.
    fn attach(
        &mut self,
        spec: &PinSpec,
        known_modes: &HashMap<String, String>,
        allow_missing: bool,
    ) -> Result<AttachResult, PinError>;

    /// What differs between `attached` and what the kernel runs (empty: nothing).
    fn verify(&self, pin_dir: &std::path::Path, attached: &[Attached]) -> Vec<String>;

    /// The real program over the live policy, for `explain` (loaded on first use).
    fn tracer(
        &mut self,
        pin_dir: &std::path::Path,
        caps: Capacities,
    ) -> Result<&LiveTracer, String>;
}

/// The loaded program, pinned under `pin_dir`, and the lock that makes the pins this
/// agent's alone.
pub struct KernelHost {
    pub ebpf: Ebpf,
    pub lock: PinLock,
    pub tracer: Option<LiveTracer>,
}

impl Host for KernelHost {
    fn attach(
        &mut self,
        spec: &PinSpec,
        known_modes: &HashMap<String, String>,
        allow_missing: bool,
    ) -> Result<AttachResult, PinError> {
        pins::attach_all(&mut self.ebpf, spec, known_modes, allow_missing)
    }

    fn verify(&self, pin_dir: &std::path::Path, attached: &[Attached]) -> Vec<String> {
        pins::verify_links(pin_dir, attached)
    }

    fn tracer(
        &mut self,
        pin_dir: &std::path::Path,
        caps: Capacities,
    ) -> Result<&LiveTracer, String> {
        if self.tracer.is_none() {
            let abi = pins::Layout::new(pin_dir).abi_dir();
            self.tracer = Some(LiveTracer::load(&abi, caps).map_err(|e| e.to_string())?);
        }
        Ok(self.tracer.as_ref().expect("loaded above"))
    }
}

/// No kernel: nothing is attached anywhere (unit tests over [`mssp_core::dataplane::backend::MemBackend`]).
pub struct NoHost;

impl Host for NoHost {
    fn attach(
        &mut self,
        _spec: &PinSpec,
        _known_modes: &HashMap<String, String>,
        _allow_missing: bool,
    ) -> Result<AttachResult, PinError> {
        Ok(AttachResult::default())
    }

    fn verify(&self, _pin_dir: &std::path::Path, _attached: &[Attached]) -> Vec<String> {
        Vec::new()
    }

    fn tracer(
        &mut self,
        _pin_dir: &std::path::Path,
        _caps: Capacities,
    ) -> Result<&LiveTracer, String> {
        Err("this agent runs over in-memory maps: there is no program to explain with".into())
    }
}
