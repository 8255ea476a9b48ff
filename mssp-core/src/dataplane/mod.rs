//! The publisher: makes a [`Desired`] state true in the maps, customer by customer, so that a
//! packet always sees a customer's old or new policy and never a mix.
//!
//! An apply has three phases:
//! 1. *prepare* (fallible): compile every changed customer (and the root, if changed) into
//!    new regions of the arenas and new records. Nothing published refers to them yet, so a
//!    failure (a full map, say) rolls back the allocations and leaves the old policy wholly
//!    in force.
//! 2. *publish*: one atomic store per changed slot, customers first, root last (so the root
//!    never routes a packet to a customer whose new record is not in place).
//! 3. *reclaim*, after an RCU barrier: old regions and records, removed customers' slots,
//!    and the ids of entries, rules and limits that are gone.

pub mod arena;
pub mod backend;
pub mod counters;
pub mod desired;
pub mod ids;
pub mod kernel;
pub mod sys;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use arena::{Arena, ArenaFull, Span};
use backend::{MapBackend, MapOpError};
pub use desired::{Desired, DesiredCustomer, DesiredEntry, DesiredRule, Layer, Scope};
use ids::Ids;
use mssp_common::{
    Net,
    abi::{
        ABI_VERSION, MAX_RULES_PER_CUSTOMER, Node4, Node6, ROOT_SLOT, RateParams, Record,
        TREE_EMPTY, Tree, record_flags,
    },
};
use time::OffsetDateTime;

use crate::compile::{
    CompileError, Digest, SourceItem, Unit, compile_sources, compile_values,
    rules::{CompiledRules, compile_rules, limit_params},
    tree::Built,
};

/// Wall-clock and boot-clock readings taken together, to turn RFC 3339 expiries into the
/// `CLOCK_BOOTTIME` nanoseconds the data path compares against.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub wall: OffsetDateTime,
    pub boot_ns: u64,
}

impl Clock {
    pub fn now() -> Clock {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        Clock {
            wall: OffsetDateTime::now_utc(),
            boot_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        }
    }

    pub fn boot_ns_at(&self, t: OffsetDateTime) -> u64 {
        let ahead = (t - self.wall).whole_nanoseconds();
        if ahead <= 0 {
            self.boot_ns
        } else {
            self.boot_ns
                .saturating_add(ahead.min(u64::MAX as i128) as u64)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Full(#[from] ArenaFull),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Map(#[from] MapOpError),
    #[error("customer slots are full: the maps hold {capacity} customers")]
    SlotsFull { capacity: u32 },
    #[error("{what} ids are exhausted: the maps hold {capacity}")]
    IdsFull { what: &'static str, capacity: u32 },
    #[error("recording id assignments failed: {0}")]
    Journal(String),
    #[error(
        "customer {customer} would have {count} rules ({layers}); a customer holds at most {max}, every layer counted"
    )]
    TooManyRules {
        customer: u32,
        count: usize,
        /// How many each layer contributes, e.g. "64 central + 1 local".
        layers: String,
        max: u32,
    },
}

/// The pinned maps do not hold what this agent can safely edit.
#[derive(Debug, thiserror::Error)]
#[error(
    "the pinned maps are inconsistent ({0}); they were left untouched and keep filtering. To \
     start over from the state directory, run the agent once with --replace-pins: it loads \
     fresh maps, republishes the policy from state_dir and swaps them in under the existing \
     links without a gap in filtering; what it costs is the counters (per customer, entry and \
     rule), which start again from zero"
)]
pub struct AdoptError(pub String);

/// Identity of a source entry: its hit counter keeps counting while this stays the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    pub scope: Scope,
    pub layer: Layer,
    pub net: Net,
}

/// What owns a rule counter / token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatKind {
    Rule { layer: Layer, id: u32 },
    Limit,
}

/// Identity of a rule (or of a customer's clean-pipe limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatKey {
    pub customer: u32,
    pub kind: StatKind,
}

/// Slot and id assignments an apply makes or releases, for the agent's id log: it is told of
/// new assignments before anything refers to them and of releases after nothing does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    pub assigned_slots: Vec<(u32, u32)>,
    pub assigned_ids: Vec<(EntryKey, u32)>,
    pub assigned_stats: Vec<(StatKey, u32)>,
    pub released_slots: Vec<(u32, u32)>,
    pub released_ids: Vec<u32>,
    pub released_stats: Vec<u32>,
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        self.assigned_slots.is_empty()
            && self.assigned_ids.is_empty()
            && self.assigned_stats.is_empty()
            && self.released_slots.is_empty()
            && self.released_ids.is_empty()
            && self.released_stats.is_empty()
    }
}

/// Slot and id assignments as the id log holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdTable {
    pub slots: Vec<(u32, u32)>,
    pub entries: Vec<(EntryKey, u32)>,
    pub stats: Vec<(StatKey, u32)>,
}

/// What is live in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveRecord {
    pub record: u32,
    pub customer_id: u32,
    /// Digest of what it was compiled from.
    pub digest: u64,
    pub n4: Span,
    pub n6: Span,
    pub chain: Span,
    pub rules: Span,
    pub cidrs: Span,
}

impl LiveRecord {
    fn of(record: u32, r: &Record) -> LiveRecord {
        LiveRecord {
            record,
            customer_id: r.customer_id,
            digest: r.digest,
            n4: r.n4,
            n6: r.n6,
            chain: r.chain,
            rules: r.rules,
            cidrs: r.rule_cidrs,
        }
    }
}

/// Why a record's copies of its source roots ([`Record::src4_head`], where the data path
/// starts its source lookups) differ from the arena's root nodes, if they do. An empty tree
/// has padding there.
fn head_drift<B: MapBackend>(b: &B, rec: &Record) -> Result<Option<String>, MapOpError> {
    let root4 = match rec.src4.root {
        TREE_EMPTY => Node4::PAD,
        r => b.read_node4(r)?,
    };
    let root6 = match rec.src6.root {
        TREE_EMPTY => Node6::PAD,
        r => b.read_node6(r)?,
    };
    let mut bad = Vec::new();
    if rec.src4_head != root4 {
        bad.push(format!("IPv4 node {}", rec.src4.root));
    }
    if rec.src6_head != root6 {
        bad.push(format!("IPv6 node {}", rec.src6.root));
    }
    Ok((!bad.is_empty()).then(|| {
        format!(
            "its copy of the source root differs from {} (lookups would not follow the published tree)",
            bad.join(" and ")
        )
    }))
}

/// Fill of one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fill {
    pub name: &'static str,
    pub used: u32,
    pub capacity: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub customers_changed: usize,
    pub customers_removed: usize,
    pub root_changed: bool,
    pub nodes_written: usize,
    pub elapsed: Duration,
    /// The new policy is enforced, but the RCU barrier failed: what it replaced (and removed
    /// customers' slots) is reclaimed after a later barrier succeeds.
    pub reclaim_deferred: bool,
}

#[derive(Default)]
struct Allocations {
    spans: Vec<(usize, Span)>,
    records: Vec<u32>,
    new_slots: Vec<(u32, u32)>,
    new_ids: Vec<(EntryKey, u32)>,
    new_stats: Vec<(StatKey, u32)>,
    reset_ids: Vec<u32>,
    reset_stats: Vec<u32>,
}

#[derive(Clone, Copy)]
enum Role {
    Infra,
    Dst,
    Src,
}

/// What a record holds besides its trees.
#[derive(Default)]
struct RecordRules {
    rules: CompiledRules,
    limit_bucket: u32,
    limit: RateParams,
    /// Every rule counter and bucket index it uses.
    stats: Vec<u32>,
    /// Extra record flags: METER (detection on), FILTER, QUIC_BLOCK.
    flags: u32,
}

// Arena indices in `Dataplane::arenas`.
const N4: usize = 0;
const N6: usize = 1;
const CHAIN: usize = 2;
const RULES: usize = 3;
const CIDRS: usize = 4;

pub struct Dataplane<B: MapBackend> {
    backend: B,
    /// NODES4, NODES6, CHAIN, RULES, RULE_CIDRS.
    arenas: [Arena; 5],
    records: Arena,
    slot_of: HashMap<u32, u32>,
    free_slots: BTreeSet<u32>,
    ids: Ids<EntryKey>,
    stats: Ids<StatKey>,
    live: HashMap<u32, LiveRecord>,
    /// Per slot: what its live record was compiled from, so an apply that leaves a customer
    /// as it was (a CLI edit to another customer, a push that changes a few) skips it.
    memo: HashMap<u32, CompiledFrom>,
    /// Records replaced while an RCU barrier failed: still possibly under a reader, so their
    /// regions are reused only after a barrier succeeds.
    unreclaimed: Vec<(u64, LiveRecord)>,
    /// Commits so far: which barrier covers which replaced record.
    commits: u64,
    /// What the last commit replaced, until [`Dataplane::reclaim`] (or the next apply).
    pending: Option<Reclaim>,
    defer_reclaim: bool,
}

/// Tells the id log what a reclaim released; a failure only keeps the ids reserved longer.
pub fn record_released(
    journal: &mut dyn FnMut(&Journal) -> Result<(), String>,
    released: &Journal,
) {
    if !released.is_empty()
        && let Err(e) = journal(released)
    {
        log::warn!("recording released ids failed (they stay reserved until restart): {e}");
    }
}

/// What an apply left to reclaim, taken out of the publisher while a barrier is waited for.
pub struct ReclaimTicket {
    reclaim: Reclaim,
    /// Commits at the time it was taken.
    commits: u64,
}

/// What a commit left behind: records it replaced, customers it removed, ids nothing uses.
struct Reclaim {
    replaced: Vec<LiveRecord>,
    removed: Vec<(u32, u32)>,
    dropped_ids: Vec<EntryKey>,
    dropped_stats: Vec<StatKey>,
}

/// What a customer's live record was compiled from, and the ids it uses.
struct CompiledFrom {
    customer: u32,
    /// Digest of the customer's desired state (entries, rules, limits) as given.
    input: u64,
    /// The live record's digest at the time.
    digest: u64,
    ids: Vec<u32>,
    stats: Vec<u32>,
    /// The entry list hashed, held so that the same list (the agent shares the central
    /// layer's lists between applies) is recognised by pointer instead of hashed again: a
    /// million entries took ~10 ms of every CLI edit. Holding it keeps the pointer from
    /// being reused by another list.
    entries: Arc<Vec<DesiredEntry>>,
    entries_digest: u64,
}

/// Digest of a customer's entry list, or `None` when it depends on the time (an entry with
/// an expiry: which entries are in effect changes as time passes).
fn entries_digest(entries: &[DesiredEntry]) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    if entries.iter().any(|e| e.expires.is_some()) {
        return None;
    }
    let mut h = foldhash::quality::FixedState::with_seed(0x6d73_7370).build_hasher();
    h.write_usize(entries.len());
    for e in entries {
        h.write_u128(e.net.addr);
        h.write_u32(
            ((e.net.len as u32) << 16)
                | ((e.net.v6 as u32) << 12)
                | ((e.layer as u32) << 8)
                | e.action as u32,
        );
    }
    Some(h.finish())
}

/// Digest of a customer's desired state given its entries' digest, or `None` when it
/// depends on the time (a rule with an expiry).
fn input_digest(c: &DesiredCustomer, entries: u64) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    if c.rules.iter().any(|r| r.expires.is_some()) {
        return None;
    }
    let mut h = foldhash::quality::FixedState::with_seed(0x6d73_7370).build_hasher();
    h.write_u32(c.id);
    h.write_u64(entries);
    // Rules and limits are few per customer.
    std::hash::Hash::hash(&c.rules, &mut h);
    std::hash::Hash::hash(&c.limits, &mut h);
    h.write_u8(c.meter as u8 | (c.filter as u8) << 1 | (c.block_quic as u8) << 2);
    Some(h.finish())
}

impl<B: MapBackend> Dataplane<B> {
    /// A publisher over maps that hold nothing yet.
    pub fn new(backend: B) -> Dataplane<B> {
        let caps = backend.capacities();
        Dataplane {
            arenas: [
                Arena::new("NODES4", caps.nodes4, 0),
                Arena::new("NODES6", caps.nodes6, 0),
                Arena::new("CHAIN", caps.chain, 0),
                Arena::new("RULES", caps.rules, 0),
                Arena::new("RULE_CIDRS", caps.rule_cidrs, 0),
            ],
            // Record 0 is never used: CUR[slot] == 0 means "no record".
            records: Arena::new("RECORDS", caps.records, 1),
            slot_of: HashMap::new(),
            free_slots: (1..caps.slots).collect(),
            ids: Ids::new("ENTRY_HITS", caps.entry_ids, false),
            // Bucket index 0 means "no limit"; buckets are shared with per-source state, so
            // fresh ids are used before recycled ones.
            stats: Ids::new("BUCKETS", caps.buckets, true),
            live: HashMap::new(),
            memo: HashMap::new(),
            unreclaimed: Vec::new(),
            commits: 0,
            pending: None,
            defer_reclaim: false,
            backend,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The slot of a customer, if it has one.
    pub fn slot(&self, customer: u32) -> Option<u32> {
        self.slot_of.get(&customer).copied()
    }

    /// Customers with a slot, as (customer id, slot), sorted by id.
    pub fn customers(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self.slot_of.iter().map(|(c, s)| (*c, *s)).collect();
        v.sort_unstable();
        v
    }

    /// The hit-counter id of an entry, if it is enforced.
    pub fn entry_id(&self, key: &EntryKey) -> Option<u32> {
        self.ids.get(key)
    }

    pub fn entry_key(&self, id: u32) -> Option<&EntryKey> {
        self.ids.key(id)
    }

    /// Every enforced entry and its id.
    pub fn entries(&self) -> impl Iterator<Item = (&EntryKey, u32)> {
        self.ids.iter()
    }

    /// The counter/bucket index of a rule or limit, if enforced.
    pub fn stat_id(&self, key: &StatKey) -> Option<u32> {
        self.stats.get(key)
    }

    /// Every enforced rule and limit and its index.
    pub fn stat_keys(&self) -> impl Iterator<Item = (&StatKey, u32)> {
        self.stats.iter()
    }

    /// What the maps hold that differs from what this publisher believes it published: each
    /// slot's live record must be the one `CUR` points at, intact (same slot, digest), and no
    /// other slot may be published. Empty when the data path does what the agent says.
    pub fn verify(&self) -> Vec<String> {
        let mut drift = Vec::new();
        let caps = self.backend.capacities();
        for slot in 0..caps.slots {
            let cur = match self.backend.current(slot) {
                Ok(c) => c,
                Err(e) => {
                    drift.push(format!("cannot read CUR: {e}"));
                    break;
                }
            };
            match (self.live.get(&slot), cur) {
                (None, 0) => {}
                (None, r) => drift.push(format!(
                    "slot {slot} publishes record {r}, which this agent did not publish"
                )),
                (Some(l), 0) => drift.push(format!(
                    "slot {slot} (customer {}) publishes nothing; record {} was expected",
                    l.customer_id, l.record
                )),
                (Some(l), r) if r != l.record => drift.push(format!(
                    "slot {slot} (customer {}) publishes record {r}, not {}",
                    l.customer_id, l.record
                )),
                (Some(l), r) => match self.backend.read_record(r) {
                    Ok(rec) if rec.digest == l.digest && rec.slot == slot => {
                        match head_drift(&self.backend, &rec) {
                            Ok(None) => {}
                            Ok(Some(d)) => drift.push(format!(
                                "slot {slot} (customer {}): record {r}: {d}",
                                l.customer_id
                            )),
                            Err(e) => drift.push(format!("record {r}: {e}")),
                        }
                    }
                    Ok(rec) => drift.push(format!(
                        "slot {slot} (customer {}): record {r} holds digest {:#x} for slot {}, not {:#x}",
                        l.customer_id, rec.digest, rec.slot, l.digest
                    )),
                    Err(e) => drift.push(format!("record {r}: {e}")),
                },
            }
        }
        drift
    }

    pub fn live(&self, slot: u32) -> Option<&LiveRecord> {
        self.live.get(&slot)
    }

    /// How full each map is.
    pub fn fill(&self) -> Vec<Fill> {
        let caps = self.backend.capacities();
        let mut v: Vec<Fill> = self
            .arenas
            .iter()
            .chain(std::iter::once(&self.records))
            .map(|a| Fill {
                name: a.name(),
                used: a.used(),
                capacity: a.capacity(),
            })
            .collect();
        v.push(Fill {
            name: "CUR",
            used: self.slot_of.len() as u32 + 1,
            capacity: caps.slots,
        });
        v.push(Fill {
            name: "ENTRY_HITS",
            used: self.ids.len() as u32,
            capacity: caps.entry_ids,
        });
        v.push(Fill {
            name: "BUCKETS",
            used: self.stats.len() as u32,
            capacity: caps.buckets,
        });
        v
    }

    /// Makes `desired` live. On error nothing published changed.
    pub fn apply(
        &mut self,
        desired: &Desired,
        clock: &Clock,
    ) -> Result<ApplyStats, DataplaneError> {
        self.apply_journaled(desired, clock, &mut |_| Ok(()))
    }

    /// [`Dataplane::apply`], telling `journal` of assignments before they are published and
    /// of releases after they are reclaimed.
    pub fn apply_journaled(
        &mut self,
        desired: &Desired,
        clock: &Clock,
        journal: &mut dyn FnMut(&Journal) -> Result<(), String>,
    ) -> Result<ApplyStats, DataplaneError> {
        let started = Instant::now();
        // What the previous apply replaced goes first: its ids and slots must be free (or
        // still assigned) before this one decides what to keep.
        self.reclaim(journal)?;
        let mut tx = Allocations::default();
        let mut stats = ApplyStats::default();
        let prepared = self
            .prepare(desired, clock, &mut tx, &mut stats)
            .and_then(|p| {
                log::debug!("apply: prepared in {:?}", started.elapsed());
                // Lent to the journal, not copied (a million keys), and handed back for a
                // rollback.
                let j = Journal {
                    assigned_slots: std::mem::take(&mut tx.new_slots),
                    assigned_ids: std::mem::take(&mut tx.new_ids),
                    assigned_stats: std::mem::take(&mut tx.new_stats),
                    ..Journal::default()
                };
                let r = if j.is_empty() { Ok(()) } else { journal(&j) };
                tx.new_slots = j.assigned_slots;
                tx.new_ids = j.assigned_ids;
                tx.new_stats = j.assigned_stats;
                r.map_err(DataplaneError::Journal)?;
                Ok(p)
            });
        match prepared {
            Ok(p) => {
                log::debug!("apply: journaled at {:?}", started.elapsed());
                let released = self.commit(desired, p, &mut stats)?;
                log::debug!("apply: committed at {:?}", started.elapsed());
                record_released(journal, &released);
                stats.elapsed = started.elapsed();
                Ok(stats)
            }
            Err(e) => {
                self.rollback(tx);
                Err(e)
            }
        }
    }

    /// Takes over maps a previous agent published into: the live records say which slots,
    /// regions and records are in use; `ids` (from the id log) says which entry, rule or limit
    /// owns which counter. Nothing is written.
    pub fn adopt(backend: B, ids: &IdTable) -> Result<Dataplane<B>, AdoptError> {
        let mut dp = Dataplane::new(backend);
        let caps = dp.backend.capacities();
        for slot in 0..caps.slots {
            let idx = dp
                .backend
                .current(slot)
                .map_err(|e| AdoptError(e.to_string()))?;
            if idx == 0 {
                continue;
            }
            let rec = dp
                .backend
                .read_record(idx)
                .map_err(|e| AdoptError(e.to_string()))?;
            if rec.abi != ABI_VERSION || rec.flags & record_flags::LIVE == 0 || rec.slot != slot {
                return Err(AdoptError(format!(
                    "slot {slot} points at record {idx}, which is not a live record of this slot (abi {}, slot {})",
                    rec.abi, rec.slot
                )));
            }
            if let Some(d) = head_drift(&dp.backend, &rec).map_err(|e| AdoptError(e.to_string()))? {
                return Err(AdoptError(format!("slot {slot} points at record {idx}: {d}")));
            }
            let live = LiveRecord::of(idx, &rec);
            for (i, span) in [
                (N4, live.n4),
                (N6, live.n6),
                (CHAIN, live.chain),
                (RULES, live.rules),
                (CIDRS, live.cidrs),
            ] {
                dp.arenas[i].claim(span).map_err(AdoptError)?;
            }
            dp.records
                .claim(Span { start: idx, len: 1 })
                .map_err(AdoptError)?;
            dp.live.insert(slot, live);
            if slot != ROOT_SLOT {
                dp.slot_of.insert(rec.customer_id, slot);
                dp.free_slots.remove(&slot);
            }
        }
        // Slots the log assigned that were never published (a crash before publishing).
        for (c, s) in &ids.slots {
            if !dp.slot_of.contains_key(c) && dp.free_slots.remove(s) {
                dp.slot_of.insert(*c, *s);
            }
        }
        dp.ids.restore(&ids.entries).map_err(AdoptError)?;
        dp.stats.restore(&ids.stats).map_err(AdoptError)?;
        Ok(dp)
    }

    /// How many slots and ids are assigned.
    pub fn assignments(&self) -> usize {
        self.slot_of.len() + self.ids.len() + self.stats.len()
    }

    /// Every assignment, for compacting the id log.
    pub fn id_table(&self) -> IdTable {
        let mut slots: Vec<(u32, u32)> = self.slot_of.iter().map(|(c, s)| (*c, *s)).collect();
        slots.sort_unstable();
        IdTable {
            slots,
            entries: self.ids.table(),
            stats: self.stats.table(),
        }
    }

    fn id_for(&mut self, key: EntryKey, tx: &mut Allocations) -> Result<u32, DataplaneError> {
        let (id, new) = self.ids.get_or_assign(key).ok_or(DataplaneError::IdsFull {
            what: "source entry",
            capacity: self.ids.capacity() - 1,
        })?;
        if let Some(recycled) = new {
            if recycled {
                // A recycled id still holds its previous entry's hits.
                tx.reset_ids.push(id);
            }
            tx.new_ids.push((key, id));
        }
        Ok(id)
    }

    fn stat_for(&mut self, key: StatKey, tx: &mut Allocations) -> Result<u32, DataplaneError> {
        let (id, new) = self
            .stats
            .get_or_assign(key)
            .ok_or(DataplaneError::IdsFull {
                what: "rule and limit",
                capacity: self.stats.capacity() - 1,
            })?;
        if let Some(recycled) = new {
            if recycled {
                tx.reset_stats.push(id);
            }
            tx.new_stats.push((key, id));
        }
        Ok(id)
    }

    /// Source items of one list, with ids, and the digest of what they say.
    fn items(
        &mut self,
        scope: Scope,
        entries: &[DesiredEntry],
        clock: &Clock,
        tx: &mut Allocations,
        digest: &mut Digest,
    ) -> Result<Vec<SourceItem>, DataplaneError> {
        let eff: Vec<DesiredEntry> = Desired::effective(entries, clock.wall)
            .into_iter()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(eff.len());
        for e in eff {
            let key = EntryKey {
                scope,
                layer: e.layer,
                net: e.net,
            };
            let id = self.id_for(key, tx)?;
            let expires_unix = e.expires.map_or(i128::MAX, |t| t.unix_timestamp_nanos());
            digest.u128(e.net.addr);
            digest.u64(((e.net.len as u64) << 40) | ((e.net.v6 as u64) << 32) | e.action as u64);
            digest.u128(expires_unix as u128);
            digest.u64(id as u64);
            out.push(SourceItem {
                net: e.net,
                action: e.action,
                expires_boot_ns: e.expires.map(|t| clock.boot_ns_at(t)),
                id,
            });
        }
        Ok(out)
    }

    /// A customer's rules and clean-pipe limit, with their counter/bucket indices.
    fn compile_rules_of(
        &mut self,
        c: &DesiredCustomer,
        clock: &Clock,
        tx: &mut Allocations,
        digest: &mut Digest,
    ) -> Result<RecordRules, DataplaneError> {
        if let Some(e) = too_many_rules(c) {
            return Err(e);
        }
        let effective = c.effective_rules();
        let mut list = Vec::new();
        for r in effective {
            if r.expires.is_some_and(|t| t <= clock.wall) {
                continue;
            }
            let key = StatKey {
                customer: c.id,
                kind: StatKind::Rule {
                    layer: r.layer,
                    id: r.spec.id,
                },
            };
            let stat = self.stat_for(key, tx)?;
            list.push((
                &r.spec,
                stat,
                r.expires.map_or(0, |t| clock.boot_ns_at(t).max(1)),
            ));
        }
        let rules = compile_rules(&list);
        // The digest covers what is published, in the ABI's own encoding (stable across
        // builds: the layouts are versioned), so a restarted agent recognises its records.
        digest.u64(rules.rules.len() as u64);
        for r in &rules.rules {
            digest.pod(r);
        }
        for c in &rules.cidrs {
            digest.pod(c);
        }
        let (limit_bucket, limit) = match &c.limits {
            Some(l) => {
                let key = StatKey {
                    customer: c.id,
                    kind: StatKind::Limit,
                };
                let id = self.stat_for(key, tx)?;
                let params = limit_params(l);
                digest.u64(id as u64);
                digest.pod(&params);
                (id, params)
            }
            None => (0, RateParams::default()),
        };
        let flags = if c.meter { record_flags::METER } else { 0 }
            | if c.filter { record_flags::FILTER } else { 0 }
            | if c.block_quic {
                record_flags::QUIC_BLOCK
            } else {
                0
            };
        digest.u64(flags as u64);
        let mut stats: Vec<u32> = list.iter().map(|(_, s, _)| *s).collect();
        if c.limits.is_some() {
            stats.push(limit_bucket);
        }
        Ok(RecordRules {
            rules,
            limit_bucket,
            limit,
            stats,
            flags,
        })
    }

    fn prepare(
        &mut self,
        desired: &Desired,
        clock: &Clock,
        tx: &mut Allocations,
        stats: &mut ApplyStats,
    ) -> Result<Prepared, DataplaneError> {
        self.ids.begin();
        self.stats.begin();
        let entries = desired.global.len()
            + desired
                .customers
                .iter()
                .map(|c| c.entries.len())
                .sum::<usize>();
        self.ids.reserve(entries.saturating_sub(self.ids.len()));
        let mut pending = Vec::new();
        let caps = self.backend.capacities();

        // Slots.
        let mut slots = Vec::with_capacity(desired.customers.len());
        for c in &desired.customers {
            let slot = match self.slot_of.get(&c.id) {
                Some(s) => *s,
                None => {
                    let s = self
                        .free_slots
                        .pop_first()
                        .ok_or(DataplaneError::SlotsFull {
                            capacity: caps.slots - 1,
                        })?;
                    self.slot_of.insert(c.id, s);
                    tx.new_slots.push((c.id, s));
                    s
                }
            };
            slots.push(slot);
        }
        let fresh: Vec<u32> = tx.new_slots.iter().map(|&(_, s)| s).collect();
        self.backend.reset_slot_counters(&fresh)?;

        // Customers.
        let mut memos = Vec::new();
        for (c, &slot) in desired.customers.iter().zip(&slots) {
            let entries_d = match self.memo.get(&slot) {
                Some(m) if Arc::ptr_eq(&m.entries, &c.entries) => Some(m.entries_digest),
                _ => entries_digest(&c.entries),
            };
            let input = entries_d.and_then(|e| input_digest(c, e));
            if let (Some(d), Some(m)) = (input, self.memo.get(&slot))
                && m.input == d
                && m.customer == c.id
                && self
                    .live
                    .get(&slot)
                    .is_some_and(|l| l.digest == m.digest && l.customer_id == c.id)
            {
                // Unchanged since it was compiled: its ids stay in use, nothing else to do.
                for &id in &m.ids {
                    self.ids.touch(id);
                }
                for &id in &m.stats {
                    self.stats.touch(id);
                }
                continue;
            }
            let mut digest = Digest::new();
            digest.u64(c.id as u64);
            let items = self.items(Scope::Customer(c.id), &c.entries, clock, tx, &mut digest)?;
            let record_rules = self.compile_rules_of(c, clock, tx, &mut digest)?;
            let digest = digest.finish();
            memos.push((
                slot,
                input
                    .zip(entries_d)
                    .map(|(input, entries_digest)| CompiledFrom {
                        customer: c.id,
                        input,
                        digest,
                        ids: items.iter().map(|i| i.id).collect(),
                        stats: record_rules.stats.clone(),
                        entries: c.entries.clone(),
                        entries_digest,
                    }),
            ));
            if self
                .live
                .get(&slot)
                .is_some_and(|l| l.digest == digest && l.customer_id == c.id)
            {
                continue;
            }
            let unit = compile_sources(&items)?;
            let live = self.place(
                slot,
                c.id,
                digest,
                vec![(Role::Src, unit)],
                record_rules,
                tx,
                stats,
            )?;
            pending.push((slot, live));
        }

        // Root: infrastructure, customer prefixes, global list.
        let mut digest = Digest::new();
        let global = self.items(Scope::Global, &desired.global, clock, tx, &mut digest)?;
        let mut infra: Vec<(Net, u32)> = desired.infrastructure.iter().map(|n| (*n, 1)).collect();
        infra.sort_unstable();
        infra.dedup();
        let mut dst: Vec<(Net, u32)> = Vec::new();
        for (c, &slot) in desired.customers.iter().zip(&slots) {
            dst.extend(c.prefixes.iter().map(|n| (*n, slot)));
        }
        dst.sort_unstable();
        dst.dedup();
        for (n, v) in infra.iter().chain(dst.iter()) {
            digest.u128(n.addr);
            digest.u64(((n.len as u64) << 40) | ((n.v6 as u64) << 32) | *v as u64);
        }
        digest.u64(infra.len() as u64);
        digest.u64(desired.global_filter as u64);
        let digest = digest.finish();
        let root = if self
            .live
            .get(&ROOT_SLOT)
            .is_some_and(|l| l.digest == digest)
        {
            None
        } else {
            let units = vec![
                (Role::Infra, compile_values(&infra)),
                (Role::Dst, compile_values(&dst)),
                (Role::Src, compile_sources(&global)?),
            ];
            Some(self.place(
                ROOT_SLOT,
                0,
                digest,
                units,
                RecordRules {
                    flags: if desired.global_filter {
                        record_flags::FILTER
                    } else {
                        0
                    },
                    ..RecordRules::default()
                },
                tx,
                stats,
            )?)
        };
        self.backend.reset_entry_hits(&tx.reset_ids)?;
        self.backend.reset_stats(&tx.reset_stats)?;
        Ok(Prepared {
            pending,
            root,
            memos,
        })
    }

    fn alloc(
        &mut self,
        arena: usize,
        len: usize,
        tx: &mut Allocations,
    ) -> Result<Span, DataplaneError> {
        let s = self.arenas[arena].alloc(len as u32)?;
        tx.spans.push((arena, s));
        Ok(s)
    }

    /// Writes compiled units and rules into fresh regions and a fresh record.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        slot: u32,
        customer_id: u32,
        digest: u64,
        mut units: Vec<(Role, Unit)>,
        mut record_rules: RecordRules,
        tx: &mut Allocations,
        stats: &mut ApplyStats,
    ) -> Result<LiveRecord, DataplaneError> {
        let len4: usize = units.iter().map(|(_, u)| u.t4.nodes.len()).sum();
        let len6: usize = units.iter().map(|(_, u)| u.t6.nodes.len()).sum();
        let lenc: usize = units.iter().map(|(_, u)| u.chain.len()).sum();
        let n4 = self.alloc(N4, len4, tx)?;
        let n6 = self.alloc(N6, len6, tx)?;
        let chain = self.alloc(CHAIN, lenc, tx)?;
        let rules = self.alloc(RULES, record_rules.rules.rules.len(), tx)?;
        let cidrs = self.alloc(CIDRS, record_rules.rules.cidrs.len(), tx)?;
        let record = self.records.alloc(1)?.start;
        tx.records.push(record);

        let mut rec = Record::EMPTY;
        rec.abi = ABI_VERSION;
        rec.flags = record_flags::LIVE | record_rules.flags;
        rec.customer_id = customer_id;
        rec.slot = slot;
        rec.digest = digest;
        rec.n4 = n4;
        rec.n6 = n6;
        rec.chain = chain;
        rec.rules = rules;
        rec.rule_cidrs = cidrs;
        rec.limit_bucket = record_rules.limit_bucket;
        rec.limit = record_rules.limit;
        let (mut o4, mut o6, mut oc) = (n4.start, n6.start, chain.start);
        for (role, u) in &mut units {
            u.relocate(o4, o6, oc);
            self.backend.write_nodes4(o4, &u.t4.nodes)?;
            self.backend.write_nodes6(o6, &u.t6.nodes)?;
            self.backend.write_chain(oc, &u.chain)?;
            stats.nodes_written += u.t4.nodes.len() + u.t6.nodes.len();
            let t4 = tree_at(&u.t4, o4);
            let t6 = tree_at(&u.t6, o6);
            match role {
                Role::Infra => (rec.infra4, rec.infra6) = (t4, t6),
                Role::Dst => (rec.dst4, rec.dst6) = (t4, t6),
                Role::Src => {
                    (rec.src4, rec.src6) = (t4, t6);
                    // The data path starts the source lookups at these copies of the roots.
                    rec.src4_head = u.t4.nodes.first().copied().unwrap_or(Node4::PAD);
                    rec.src6_head = u.t6.nodes.first().copied().unwrap_or(Node6::PAD);
                }
            }
            o4 += u.t4.nodes.len() as u32;
            o6 += u.t6.nodes.len() as u32;
            oc += u.chain.len() as u32;
        }
        record_rules.rules.relocate(cidrs.start);
        self.backend
            .write_rule_cidrs(cidrs.start, &record_rules.rules.cidrs)?;
        self.backend
            .write_rules(rules.start, &record_rules.rules.rules)?;
        self.backend.write_record(record, &rec)?;
        Ok(LiveRecord::of(record, &rec))
    }

    fn commit(
        &mut self,
        desired: &Desired,
        p: Prepared,
        stats: &mut ApplyStats,
    ) -> Result<Journal, DataplaneError> {
        let Prepared {
            pending,
            root,
            memos,
        } = p;
        // Publish: customers first, the root last.
        for (slot, live) in &pending {
            self.backend.publish(*slot, live.record)?;
        }
        if let Some(r) = &root {
            self.backend.publish(ROOT_SLOT, r.record)?;
        }
        stats.customers_changed = pending.len();
        stats.root_changed = root.is_some();

        let wanted: HashSet<u32> = desired.customers.iter().map(|c| c.id).collect();
        let removed: Vec<(u32, u32)> = self
            .slot_of
            .iter()
            .filter(|(c, _)| !wanted.contains(c))
            .map(|(c, s)| (*c, *s))
            .collect();
        let dropped_ids = self.ids.untouched();
        let dropped_stats = self.stats.untouched();

        // Everything published above is live from here on: memory follows the maps whatever
        // happens next. What the new records replaced may still be under a reader until the
        // barrier has passed; should it fail, nothing old is reused — the old records wait
        // (and removed customers keep their slots) until a later barrier succeeds.
        let mut replaced = Vec::new();
        for (slot, live) in pending {
            if let Some(old) = self.live.insert(slot, live) {
                replaced.push(old);
            }
        }
        if let Some(r) = root
            && let Some(old) = self.live.insert(ROOT_SLOT, r)
        {
            replaced.push(old);
        }
        for (slot, m) in memos {
            match m {
                Some(m) => self.memo.insert(slot, m),
                None => self.memo.remove(&slot),
            };
        }
        stats.customers_removed = removed.len();
        self.commits += 1;
        self.pending = Some(Reclaim {
            replaced,
            removed,
            dropped_ids,
            dropped_stats,
        });
        if self.defer_reclaim {
            return Ok(Journal::default());
        }
        let Some(t) = self.take_reclaim() else {
            return Ok(Journal::default());
        };
        let barrier = self.backend.barrier();
        stats.reclaim_deferred = barrier.is_err();
        self.finish_reclaim(t, barrier)
    }

    /// Publishes first and reclaims later: with `true`, an apply returns as soon as the new
    /// policy is live, leaving what it replaced to be reclaimed after an RCU barrier
    /// ([`Dataplane::reclaim`], or [`Dataplane::take_reclaim`] and
    /// [`Dataplane::finish_reclaim`] around a barrier waited for elsewhere); the next apply
    /// reclaims first whatever is left. The barrier takes ~10 ms, a third of a CLI edit at
    /// a million entries: the agent waits for it after replying, without holding its lock.
    pub fn set_defer_reclaim(&mut self, defer: bool) {
        self.defer_reclaim = defer;
    }

    /// Whether an apply left something to reclaim.
    pub fn reclaim_due(&self) -> bool {
        self.pending.is_some()
    }

    /// Reclaims what the last apply replaced, after an RCU barrier, and tells `journal` of
    /// what was released. `Ok(false)`: nothing to do.
    pub fn reclaim(
        &mut self,
        journal: &mut dyn FnMut(&Journal) -> Result<(), String>,
    ) -> Result<bool, DataplaneError> {
        let Some(t) = self.take_reclaim() else {
            return Ok(false);
        };
        let barrier = self.backend.barrier();
        let released = self.finish_reclaim(t, barrier)?;
        record_released(journal, &released);
        Ok(true)
    }

    /// Takes what the last apply left to reclaim. Wait for an RCU barrier that starts after
    /// this call (see [`MapBackend::detached_barrier`]), then hand its result to
    /// [`Dataplane::finish_reclaim`]; applies may run in between.
    pub fn take_reclaim(&mut self) -> Option<ReclaimTicket> {
        self.pending.take().map(|reclaim| ReclaimTicket {
            reclaim,
            commits: self.commits,
        })
    }

    /// Reclaims what `t` holds, given the result of a barrier that started after
    /// [`Dataplane::take_reclaim`]. Replaced records are free now. Removed customers' slots
    /// and unused ids are freed only if nothing was published since the ticket was taken:
    /// otherwise a packet the barrier did not wait for may still reach them, and the later
    /// apply, which found them unused too, frees them after its own barrier.
    pub fn finish_reclaim(
        &mut self,
        t: ReclaimTicket,
        barrier: backend::OpResult,
    ) -> Result<Journal, DataplaneError> {
        let Reclaim {
            replaced,
            removed,
            dropped_ids,
            dropped_stats,
        } = t.reclaim;
        let mut released = Journal::default();
        if let Err(e) = barrier {
            log::warn!(
                "the RCU barrier failed ({e}): the new policy is enforced, but {} replaced records are kept until a later barrier succeeds",
                replaced.len()
            );
            // Removed customers and unused ids are found again by the next apply.
            self.unreclaimed
                .extend(replaced.into_iter().map(|r| (t.commits, r)));
            return Ok(released);
        }
        // Records replaced by any commit up to the ticket's are past the barrier.
        let (safe, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unreclaimed)
            .into_iter()
            .partition(|(c, _)| *c <= t.commits);
        self.unreclaimed = later;
        for old in safe.into_iter().map(|(_, r)| r).chain(replaced) {
            self.release_live(old);
        }
        if self.commits != t.commits {
            return Ok(released);
        }
        for (c, slot) in &removed {
            // The new root no longer routes to this slot and the barrier has passed, so no
            // packet can reach the slot any more.
            self.backend.publish(*slot, 0)?;
            if let Some(old) = self.live.remove(slot) {
                self.release_live(old);
            }
            self.slot_of.remove(c);
            self.memo.remove(slot);
            self.free_slots.insert(*slot);
            released.released_slots.push((*c, *slot));
        }
        for k in dropped_ids {
            if let Some(id) = self.ids.release(&k) {
                released.released_ids.push(id);
            }
        }
        for k in dropped_stats {
            if let Some(id) = self.stats.release(&k) {
                released.released_stats.push(id);
            }
        }
        Ok(released)
    }

    fn release_live(&mut self, l: LiveRecord) {
        for (i, s) in [
            (N4, l.n4),
            (N6, l.n6),
            (CHAIN, l.chain),
            (RULES, l.rules),
            (CIDRS, l.cidrs),
        ] {
            self.arenas[i].release(s);
        }
        self.records.release(Span {
            start: l.record,
            len: 1,
        });
    }

    fn rollback(&mut self, tx: Allocations) {
        for (i, s) in tx.spans {
            self.arenas[i].release(s);
        }
        for r in tx.records {
            self.records.release(Span { start: r, len: 1 });
        }
        for (c, s) in tx.new_slots {
            self.slot_of.remove(&c);
            self.free_slots.insert(s);
        }
        for (k, _) in tx.new_ids {
            self.ids.release(&k);
        }
        for (k, _) in tx.new_stats {
            self.stats.release(&k);
        }
    }
}

/// A customer whose rules of every layer together exceed what the data path runs.
fn too_many_rules(c: &DesiredCustomer) -> Option<DataplaneError> {
    let effective = c.effective_rules();
    if effective.len() <= MAX_RULES_PER_CUSTOMER as usize {
        return None;
    }
    let layers: Vec<String> = Layer::ALL
        .iter()
        .rev()
        .filter_map(|l| {
            let n = effective.iter().filter(|r| r.layer == *l).count();
            (n > 0).then(|| format!("{n} {}", l.name()))
        })
        .collect();
    Some(DataplaneError::TooManyRules {
        customer: c.id,
        count: effective.len(),
        layers: layers.join(" + "),
        max: MAX_RULES_PER_CUSTOMER,
    })
}

/// What an apply of `desired` would refuse before writing anything that does not depend on
/// the maps' fill: rules per customer across layers. (`push --dry-run`, `policy validate
/// --agent`.)
pub fn check(desired: &Desired) -> Result<(), DataplaneError> {
    match desired.customers.iter().find_map(too_many_rules) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Prepared {
    pending: Vec<(u32, LiveRecord)>,
    root: Option<LiveRecord>,
    /// Memos of the customers compiled (or checked) in this apply; `None`: keep none.
    memos: Vec<(u32, Option<CompiledFrom>)>,
}

fn tree_at<N: crate::compile::tree::NodeKind>(t: &Built<N>, at: u32) -> Tree {
    if t.is_empty() {
        Tree::EMPTY
    } else {
        Tree {
            root: at,
            height: t.height,
        }
    }
}

#[cfg(test)]
mod tests;
