//! Loading the embedded XDP program: load-time specialisation (trace on or off, map sizes)
//! and the errors an operator can act on.

use aya::{Ebpf, EbpfLoader, programs::Xdp};

use crate::dataplane::backend::Capacities;
use mssp_common::abi::map_names;

/// The XDP object built from `mssp-ebpf` by `build.rs`.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mssp-xdp"));

/// The program's name in the object.
pub const PROGRAM_NAME: &str = "mssp_xdp";

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Record every decision in `TRACE_OUT` (simulate, tests). Off in production.
    pub trace: bool,
    /// Map sizes; `None` keeps the program's defaults.
    pub capacities: Option<Capacities>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the XDP program failed: {0}{hint}", hint = permission_hint(.0))]
    Load(String),
    #[error("the verifier refused the XDP program: {0}")]
    Verifier(String),
}

fn permission_hint(msg: &str) -> &'static str {
    if msg.contains("Operation not permitted") || msg.contains("permission denied") {
        " (loading BPF needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    } else {
        ""
    }
}

/// Loads the object and the program (not attached anywhere).
pub fn load(opts: &LoadOptions) -> Result<Ebpf, LoadError> {
    let mut loader = EbpfLoader::new();
    if std::env::var_os("MSSP_VERIFIER_LOG").is_some() {
        // Debugging the verifier: the whole log comes back with a refusal.
        loader.verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
    }
    if opts.trace {
        loader.override_global("TRACE", &1u32, true);
    }
    if let Some(c) = &opts.capacities {
        loader
            .map_max_entries(map_names::CUR, c.slots)
            .map_max_entries(map_names::RECORDS, c.records)
            .map_max_entries(map_names::NODES4, c.nodes4)
            .map_max_entries(map_names::NODES6, c.nodes6)
            .map_max_entries(map_names::CHAIN, c.chain)
            .map_max_entries(map_names::ENTRY_HITS, c.entry_ids)
            .map_max_entries(map_names::COUNTERS, c.slots * 32);
    }
    let mut ebpf = loader
        .load(PROGRAM)
        .map_err(|e| LoadError::Load(format!("{e:#}")))?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| LoadError::Load(format!("the object has no program {PROGRAM_NAME}")))?
        .try_into()
        .map_err(|e| LoadError::Load(format!("{e}")))?;
    prog.load().map_err(|e| match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Verifier(format!("{io_error}\n{verifier_log}")),
        other => LoadError::Load(format!("{other}")),
    })?;
    if std::env::var_os("MSSP_VERIFIER_STATS").is_some()
        && let Ok(info) = prog.info()
    {
        eprintln!(
            "mssp: verifier processed the program ({} instructions verified, {} translated bytes)",
            info.verified_instruction_count().unwrap_or(0),
            info.size_translated().unwrap_or(0)
        );
    }
    Ok(ebpf)
}
