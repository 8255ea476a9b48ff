//! Loading the embedded XDP program: load-time specialisation (trace on or off, map sizes)
//! and the errors an operator can act on.

use aya::{Ebpf, EbpfLoader, programs::Xdp};

use crate::capacity::{Capacities, ncpus};
use mssp_common::{
    abi::{
        Bucket, ChainLink, Counter, METER_SLOTS, MeterSlot, Node4, Node6, Record, Rule, RuleCidr,
        RuleCounter, SAMPLE_RING_BYTES, config_index, map_names,
    },
    filter,
    reason::{NREASONS, NVERDICTS},
};

/// The XDP object built from `mssp-ebpf` by `build.rs`.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mssp-xdp"));

/// The program's name in the object.
pub const PROGRAM_NAME: &str = "mssp_xdp";
/// The customer-interface program (content filtering), in the same object, over the same maps.
pub const CUSTOMER_PROGRAM_NAME: &str = "mssp_xdp_customer";

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Prepend every decision to the frame BPF_PROG_TEST_RUN hands back (simulate, tests).
    /// Off in production.
    pub trace: bool,
    /// Map sizes; `None` keeps the program's defaults.
    pub capacities: Option<Capacities>,
    /// The benchmark floor: parse, drop, count; no lookups.
    pub parse_only: bool,
    /// The regression check's baseline: the same program without meters and samples.
    pub no_observe: bool,
    /// The benchmark's breakdown: stop after one step of the source lookup.
    pub breakdown: Option<Breakdown>,
    /// Reuse (or create and pin) every map under this directory instead of private maps.
    pub pin_maps: Option<std::path::PathBuf>,
    /// Reuse only the policy maps ([`POLICY_MAPS`]) pinned under this directory; counters
    /// and token buckets stay private (a tracer over the live policy).
    pub share_policy_maps: Option<std::path::PathBuf>,
}

/// The maps that hold the published policy (everything else counts or limits).
pub const POLICY_MAPS: [&str; 7] = [
    map_names::CUR,
    map_names::RECORDS,
    map_names::NODES4,
    map_names::NODES6,
    map_names::CHAIN,
    map_names::RULES,
    map_names::RULE_CIDRS,
];

/// Where the benchmark's breakdown variant stops (then drops): each step of the per-packet
/// source lookup measured alone (`STOP_AFTER` in the program).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breakdown {
    /// After the customer's record (found through the root's destination tree).
    Record = 1,
    /// After the root node of the customer's source tree.
    Root = 2,
    /// After the whole source lookup (to the leaf, expiry chains resolved), without counting
    /// the entry's hit.
    Leaf = 3,
    /// After the root's destination tree (the customer's slot known), before the customer's
    /// record is read.
    Slot = 4,
    /// The whole lookup, the hit counted in a cell keyed by the leaf's position whose lines
    /// are read before the leaf (the hit-cell probe; mssp_1m minus this is its gain).
    Cells = 5,
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

/// The load-time globals that follow from the map sizes. The loader borrows them until it
/// loads, so the caller owns them.
#[derive(Clone, Copy, Debug)]
struct Globals {
    slots: u32,
    counters_stride: u32,
    hits_stride: u32,
    rule_stats_stride: u32,
    meters_stride: u32,
}

impl Globals {
    fn new(c: &Capacities) -> Self {
        Globals {
            slots: c.slots,
            counters_stride: c.slots * NVERDICTS * NREASONS,
            hits_stride: c.entry_ids,
            rule_stats_stride: c.buckets,
            meters_stride: METER_SLOTS,
        }
    }
}

/// Map sizes and the load-time globals that go with them, for a fresh or pinned load alike.
fn configure<'a>(loader: &mut EbpfLoader<'a>, c: &Capacities, g: &'a Globals) {
    loader
        .override_global("SLOTS", &g.slots, true)
        .override_global("COUNTERS_STRIDE", &g.counters_stride, true)
        .override_global("HITS_STRIDE", &g.hits_stride, true)
        .override_global("RULE_STATS_STRIDE", &g.rule_stats_stride, true)
        .override_global("METERS_STRIDE", &g.meters_stride, true);
    for s in expected_shapes(c, ncpus()) {
        loader.map_max_entries(s.name, s.entries);
    }
}

/// The shape of a map the agent pins, as `configure` creates it.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub entries: u32,
}

/// Every map the agent pins and checks, as `configure` creates them.
pub fn expected_shapes(c: &Capacities, cpus: u32) -> Vec<Shape> {
    let array = |(name, value_size, entries): (&'static str, u32, u32)| Shape {
        name,
        key_size: 4,
        value_size,
        entries,
    };
    let mut v: Vec<Shape> = array_shapes(c, cpus).into_iter().map(array).collect();
    v.push(array((
        map_names::METERS,
        size_of::<MeterSlot>() as u32,
        METER_SLOTS * cpus,
    )));
    v.push(Shape {
        name: map_names::SAMPLES,
        key_size: 0,
        value_size: 0,
        entries: SAMPLE_RING_BYTES,
    });
    v.push(array((map_names::CONFIG, 8, config_index::N)));
    v.push(array((map_names::XSKS, 4, filter::XSK_ENTRIES)));
    v.push(Shape {
        name: map_names::XSK_BASE,
        key_size: 4,
        value_size: 4,
        entries: filter::MAX_CUSTOMER_IFACES,
    });
    v.push(Shape {
        name: map_names::FLOWS,
        key_size: size_of::<filter::FlowKey>() as u32,
        value_size: 4,
        entries: filter::MAX_FLOWS,
    });
    v.push(array((map_names::FILTER_STATS, 8, filter::filter_stat::N)));
    v
}

fn array_shapes(c: &Capacities, cpus: u32) -> Vec<(&'static str, u32, u32)> {
    let counters = c.slots * NVERDICTS * NREASONS;
    vec![
        (map_names::CUR, 4, c.slots),
        (map_names::RECORDS, size_of::<Record>() as u32, c.records),
        (map_names::NODES4, size_of::<Node4>() as u32, c.nodes4),
        (map_names::NODES6, size_of::<Node6>() as u32, c.nodes6),
        (map_names::CHAIN, size_of::<ChainLink>() as u32, c.chain),
        (
            map_names::COUNTERS,
            size_of::<Counter>() as u32,
            counters * cpus,
        ),
        (
            map_names::ENTRY_HITS,
            size_of::<Counter>() as u32,
            c.entry_ids * cpus,
        ),
        (map_names::RULES, size_of::<Rule>() as u32, c.rules),
        (
            map_names::RULE_CIDRS,
            size_of::<RuleCidr>() as u32,
            c.rule_cidrs,
        ),
        (
            map_names::RULE_STATS,
            size_of::<RuleCounter>() as u32,
            c.buckets * cpus,
        ),
        (map_names::BUCKETS, size_of::<Bucket>() as u32, c.buckets),
    ]
}

/// Cells per CPU for the hit-cell probe: 16 per IPv4 leaf over 300k node indices (the 1M
/// bench policy uses ~261k nodes; a leaf past them is not counted, see `cells.rs`).
const PROBE_CELLS_STRIDE: u32 = 300_000 * 16;

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

    if opts.parse_only {
        loader.override_global("PARSE_ONLY", &1u32, true);
    }
    if opts.no_observe {
        loader.override_global("OBSERVE", &0u32, true);
    }
    let stop = opts.breakdown.map_or(0u32, |b| b as u32);
    if stop != 0 {
        loader.override_global("STOP_AFTER", &stop, true);
    }
    if opts.breakdown == Some(Breakdown::Cells) {
        loader
            .override_global("CELLS_STRIDE", &PROBE_CELLS_STRIDE, true)
            .map_max_entries("HIT_CELLS", PROBE_CELLS_STRIDE.saturating_mul(ncpus()));
    }
    let caps = opts.capacities.unwrap_or_default();
    let globals = Globals::new(&caps);
    configure(&mut loader, &caps, &globals);
    let pin_paths: Vec<(&str, std::path::PathBuf)> = match (&opts.pin_maps, &opts.share_policy_maps)
    {
        (Some(dir), _) => map_names::ALL.iter().map(|n| (*n, dir.join(n))).collect(),
        (None, Some(dir)) => POLICY_MAPS.iter().map(|n| (*n, dir.join(n))).collect(),
        (None, None) => Vec::new(),
    };
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(PROGRAM)
        .map_err(|e| LoadError::Load(format!("{e:#}")))?;
    for name in [CUSTOMER_PROGRAM_NAME, PROGRAM_NAME] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::Load(format!("the object has no program {name}")))?
            .try_into()
            .map_err(|e| LoadError::Load(format!("{e}")))?;
        prog.load().map_err(|e| match e {
            aya::programs::ProgramError::LoadError {
                io_error,
                verifier_log,
            } => LoadError::Verifier(format!("{name}: {io_error}\n{verifier_log}")),
            other => LoadError::Load(format!("{other}")),
        })?;
    }
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| LoadError::Load(format!("the object has no program {PROGRAM_NAME}")))?
        .try_into()
        .map_err(|e| LoadError::Load(format!("{e}")))?;
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
