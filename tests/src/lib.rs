//! Helpers shared by the kernel-facing tests: a harness around the real XDP program run with
//! BPF_PROG_TEST_RUN, a packet builder, and network-namespace topologies that clean up after
//! themselves.

pub mod agent;
pub mod content;
pub mod edge;
pub mod fleet;
pub mod nft;
pub mod packet;
pub mod push;
pub mod timing;
pub mod traffic;

use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard, OnceLock},
};

/// The lab PKI, shared with the bench.
pub use mssp_bench::pki;
/// The lab topologies (namespaces, veth pairs, bpffs), shared with the bench and the demo.
pub use mssp_lab as netns;
/// Floods from trafgen, shared with the demo.
pub use mssp_lab::trafgen;

use mssp_common::{
    Reason, Verdict,
    abi::{Counter, counter_index},
};
use mssp_core::{
    dataplane::{Clock, Desired, EntryKey, Layer, Scope, backend::MapBackend},
    policy::{Capacity, Policy, cidr::parse_cidr, parse_policy},
    simulate::{Decision, Simulator},
};

/// Kernel tests need root (or CAP_BPF + CAP_NET_ADMIN); say so plainly instead of failing
/// with EPERM somewhere deep.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests load XDP programs and create network namespaces: run them as root \
         (`sudo -E cargo xtask test`)"
    );
}

pub fn policy(json: &str) -> Policy {
    parse_policy(json.as_bytes(), &Capacity::default())
        .unwrap_or_else(|e| panic!("test policy refused: {e}\n{json}"))
}

/// The real program, loaded once per test binary with tracing on, over private maps.
pub struct Harness {
    pub sim: Simulator,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

impl Harness {
    /// The shared harness (tests in one binary take turns).
    pub fn get() -> MutexGuard<'static, Harness> {
        require_root();
        let m = HARNESS.get_or_init(|| {
            let sim = Simulator::new(&Policy::empty()).expect("load the XDP program");
            Mutex::new(Harness { sim })
        });
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a policy (through the same publisher the agent uses).
    pub fn set_policy(&mut self, json: &str) {
        let p = policy(json);
        self.sim
            .dataplane_mut()
            .apply(&Desired::from_policy(&p), &Clock::now())
            .expect("apply the test policy");
    }

    pub fn run(&mut self, frame: &[u8]) -> Decision {
        self.sim
            .run(frame)
            .expect("BPF_PROG_TEST_RUN")
            .expect("frame long enough for XDP")
    }

    /// The `(customer, verdict, reason)` counter, summed over CPUs.
    pub fn counter(&self, customer: Option<u32>, verdict: Verdict, reason: Reason) -> Counter {
        let dp = self.sim.dataplane();
        let slot = match customer {
            None => 0,
            Some(c) => dp
                .slot(c)
                .unwrap_or_else(|| panic!("customer {c} has no slot")),
        };
        dp.backend().read_counter_at(counter_index(
            slot,
            verdict as u32,
            reason as u32,
            dp.backend().capacities().slots,
        ))
    }

    /// Counters of a central-layer rule.
    pub fn rule_stats(&self, customer: u32, id: u32) -> mssp_common::abi::RuleCounter {
        let dp = self.sim.dataplane();
        let key = mssp_core::dataplane::StatKey {
            customer,
            kind: mssp_core::dataplane::StatKind::Rule {
                layer: Layer::Central,
                id,
            },
        };
        let stat = dp
            .stat_id(&key)
            .unwrap_or_else(|| panic!("rule {id} of customer {customer} is not enforced"));
        dp.backend()
            .read_rule_stats(stat, 1)
            .expect("read rule stats")[0]
    }

    /// Hits of a central-layer source entry.
    pub fn hits(&self, scope: Scope, prefix: &str) -> Counter {
        let dp = self.sim.dataplane();
        let key = EntryKey {
            scope,
            layer: Layer::Central,
            net: parse_cidr(prefix, false).expect("test prefix"),
        };
        let id = dp
            .entry_id(&key)
            .unwrap_or_else(|| panic!("{prefix} in {scope:?} is not enforced"));
        dp.backend().read_hits_at(id)
    }
}

/// Convenience for counter reads in tests.
pub trait ReadCounters {
    fn read_counter_at(&self, index: u32) -> Counter;
    fn read_hits_at(&self, id: u32) -> Counter;
}

impl<B: mssp_core::dataplane::backend::MapBackend> ReadCounters for B {
    fn read_counter_at(&self, index: u32) -> Counter {
        self.read_counter(index).expect("read counter")
    }

    fn read_hits_at(&self, id: u32) -> Counter {
        self.read_entry_hits(id).expect("read entry hits")
    }
}

/// The `mssp` binary built next to this test binary (`cargo xtask test` builds it first), or
/// `$MSSP_BIN` (to run a test against another build: a regression test against the build
/// before its fix, say).
pub fn mssp_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MSSP_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join("mssp");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release`, or run `cargo xtask test`)",
        bin.display()
    );
    bin
}

/// Asserts a decision, with the frame in the message when it is wrong.
#[track_caller]
pub fn expect(d: &Decision, action: &str, reason: Reason, customer: Option<u32>, what: &str) {
    assert_eq!(
        (d.action, d.reason, d.customer),
        (action, reason.name(), customer),
        "{what}"
    );
}
