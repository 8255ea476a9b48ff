//! The real XDP program over test frames (BPF_PROG_TEST_RUN), loaded with tracing on over
//! private, unpinned maps that hold one policy. Answers "why was this packet dropped?" with
//! the program's own decision, not a re-implementation (`mssp simulate`, the kernel tests).

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use mssp_common::{
    Reason, Verdict,
    abi::{TRACE_MAGIC, Trace, trace_flags},
    proto::ETH_HLEN,
};

use crate::{
    dataplane::{Clock, Dataplane, DataplaneError, Desired, kernel::KernelBackend},
    loader::{self, LoadError, LoadOptions, PROGRAM_NAME},
    policy::{Policy, cidr::format_net},
};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("opening the program's maps: {0}")]
    Maps(String),
    #[error("loading the policy into the program's maps: {0}")]
    Policy(#[from] DataplaneError),
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(String),
    #[error("the program returned no trace record ({got} bytes for a {frame}-byte frame)")]
    NoTrace { got: usize, frame: usize },
}

/// The program loaded with tracing on, its maps holding one policy.
pub struct Simulator {
    ebpf: Ebpf,
    dataplane: Dataplane<KernelBackend>,
}

/// What the program decided for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// XDP action: "pass" or "drop".
    pub action: &'static str,
    pub reason: &'static str,
    pub customer: Option<u32>,
    /// The source entry that decided (prefix and layer), if one did.
    pub entry: Option<String>,
    pub layer: Option<&'static str>,
    /// The rule that decided (drop, pass, rate limit), if one did.
    pub rule: Option<u32>,
    /// Monitor entries that counted the packet ("global", "customer").
    pub monitored: Vec<&'static str>,
    pub verdict: Option<Verdict>,
    pub reason_code: Option<Reason>,
}

impl Simulator {
    /// Loads the program with private maps and publishes `policy` into them.
    pub fn new(policy: &Policy) -> Result<Simulator, SimulateError> {
        Self::with_desired(&Desired::from_policy(policy))
    }

    /// Loads the program with private maps and publishes a desired state into them.
    pub fn with_desired(desired: &Desired) -> Result<Simulator, SimulateError> {
        let mut ebpf = loader::load(&LoadOptions {
            trace: true,
            ..LoadOptions::default()
        })?;
        let backend =
            KernelBackend::from_ebpf(&mut ebpf).map_err(|e| SimulateError::Maps(e.to_string()))?;
        let mut dataplane = Dataplane::new(backend);
        dataplane.apply(desired, &Clock::now())?;
        Ok(Simulator { ebpf, dataplane })
    }

    pub fn dataplane(&self) -> &Dataplane<KernelBackend> {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane<KernelBackend> {
        &mut self.dataplane
    }

    /// Runs one frame through the program; `None` for frames the kernel would never hand to
    /// XDP (shorter than an Ethernet header). Safe to call from several threads at once.
    pub fn run(&self, frame: &[u8]) -> Result<Option<Decision>, SimulateError> {
        let Some((retval, t)) = trace_run(&self.ebpf, frame)? else {
            return Ok(None);
        };
        Ok(Some(decision(retval, &t, |id| {
            self.dataplane.entry_key(id).copied()
        })))
    }
}

/// The real program (tracing on) over the **live** policy: the agent's pinned policy maps,
/// read-only in effect, with counters and token buckets of its own, so a probe neither
/// shows in the production counters nor spends a customer's rate-limit tokens (a rate-limited
/// rule therefore always looks within its limit here).
pub struct LiveTracer {
    ebpf: Ebpf,
}

impl LiveTracer {
    /// Loads over the policy maps pinned in `abi_dir` (`pin_dir/v<ABI>`), made for `caps`.
    pub fn load(
        abi_dir: &std::path::Path,
        caps: crate::capacity::Capacities,
    ) -> Result<LiveTracer, SimulateError> {
        for name in loader::POLICY_MAPS {
            if !abi_dir.join(name).exists() {
                return Err(SimulateError::Maps(format!(
                    "no pinned map {name} in {}: is the agent's data plane there?",
                    abi_dir.display()
                )));
            }
        }
        let ebpf = loader::load(&LoadOptions {
            trace: true,
            capacities: Some(caps),
            share_policy_maps: Some(abi_dir.to_path_buf()),
            ..LoadOptions::default()
        })?;
        Ok(LiveTracer { ebpf })
    }

    /// One frame's decision; `entry_key` names the deciding entry by its id.
    pub fn run(
        &self,
        frame: &[u8],
        entry_key: impl Fn(u32) -> Option<crate::dataplane::EntryKey>,
    ) -> Result<Option<Decision>, SimulateError> {
        let Some((retval, t)) = trace_run(&self.ebpf, frame)? else {
            return Ok(None);
        };
        Ok(Some(decision(retval, &t, entry_key)))
    }
}

/// A trace record as a decision, the deciding entry named through `entry_key`.
fn decision(
    retval: u32,
    t: &Trace,
    entry_key: impl Fn(u32) -> Option<crate::dataplane::EntryKey>,
) -> Decision {
    {
        let verdict = Verdict::from_u32(t.verdict);
        let action = match retval {
            1 => "drop",
            2 => "pass",
            0 => "aborted",
            3 => "tx",
            4 => "redirect",
            _ => "unknown",
        };
        let key = (t.entry != 0).then(|| entry_key(t.entry)).flatten();
        let mut monitored = Vec::new();
        if t.flags & trace_flags::GLOBAL_MONITOR != 0 {
            monitored.push("global");
        }
        if t.flags & trace_flags::CUSTOMER_MONITOR != 0 {
            monitored.push("customer");
        }
        Decision {
            action,
            reason: Reason::from_u32(t.reason).map_or("unknown", |r| r.name()),
            customer: (t.flags & trace_flags::CUSTOMER != 0).then_some(t.customer_id),
            entry: key.map(|k| format_net(&k.net)),
            layer: key.map(|k| k.layer.name()),
            rule: matches!(
                Reason::from_u32(t.reason),
                Some(Reason::Rule | Reason::RateLimited)
            )
            .then_some(t.rule),
            monitored,
            verdict,
            reason_code: Reason::from_u32(t.reason),
        }
    }
}

/// Runs `frame` through a program loaded with `TRACE = 1` and returns the XDP action and the
/// trace record it prepended. `None` for frames shorter than an Ethernet header.
pub fn trace_run(ebpf: &Ebpf, frame: &[u8]) -> Result<Option<(u32, Trace)>, SimulateError> {
    if frame.len() < ETH_HLEN {
        return Ok(None);
    }
    let prog: &Xdp = ebpf
        .program(PROGRAM_NAME)
        .ok_or_else(|| SimulateError::TestRun(format!("the object has no program {PROGRAM_NAME}")))?
        .try_into()
        .map_err(|e| SimulateError::TestRun(format!("{e}")))?;
    let mut out = vec![0u8; frame.len() + 2 * size_of::<Trace>()];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .map_err(|e| SimulateError::TestRun(e.to_string()))?;
    let n = (r.data_size_out as usize).min(out.len());
    if n < size_of::<Trace>() + frame.len() {
        return Err(SimulateError::NoTrace {
            got: n,
            frame: frame.len(),
        });
    }
    // SAFETY: Trace is plain old data and the buffer holds at least one.
    let t: Trace = unsafe { std::ptr::read_unaligned(out.as_ptr().cast()) };
    if t.seq != TRACE_MAGIC {
        return Err(SimulateError::NoTrace {
            got: n,
            frame: frame.len(),
        });
    }
    Ok(Some((r.return_value, t)))
}
