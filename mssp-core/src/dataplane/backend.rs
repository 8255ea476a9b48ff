//! Where compiled policy goes: the kernel maps ([`super::kernel::KernelBackend`]) or plain
//! memory ([`MemBackend`], so that the publishing logic is tested without root).

use mssp_common::abi::{ChainLink, Counter, Node4, Node6, Record, Rule, RuleCidr, RuleCounter};

use super::counters::{CounterTable, PER_SLOT, SlotCounters, slot_indices};

/// A failed map operation.
#[derive(Debug, thiserror::Error)]
#[error("map {map}: {op} failed: {detail}")]
pub struct MapOpError {
    pub map: &'static str,
    pub op: &'static str,
    pub detail: String,
}

pub type OpResult<T = ()> = Result<T, MapOpError>;

pub use crate::capacity::Capacities;

/// The operations the publisher needs. Writes go only to places no published record refers
/// to; `publish` is the one operation a packet can observe, and it is a single atomic store.
pub trait MapBackend {
    fn capacities(&self) -> Capacities;
    fn write_nodes4(&mut self, at: u32, nodes: &[Node4]) -> OpResult;
    fn write_nodes6(&mut self, at: u32, nodes: &[Node6]) -> OpResult;
    fn write_chain(&mut self, at: u32, links: &[ChainLink]) -> OpResult;
    fn write_record(&mut self, idx: u32, rec: &Record) -> OpResult;
    fn write_rules(&mut self, at: u32, rules: &[Rule]) -> OpResult;
    fn write_rule_cidrs(&mut self, at: u32, cidrs: &[RuleCidr]) -> OpResult;
    /// Zeroes the rule counters and token buckets of indices (before they are reused).
    fn reset_stats(&mut self, ids: &[u32]) -> OpResult;
    /// `count` consecutive rule counters from `start`, summed over CPUs.
    fn read_rule_stats(&self, start: u32, count: u32) -> OpResult<Vec<RuleCounter>>;
    fn read_record(&self, idx: u32) -> OpResult<Record>;
    /// The IPv4 node at `idx` (adoption and `verify` check the heads records carry).
    fn read_node4(&self, idx: u32) -> OpResult<Node4>;
    /// The IPv6 node at `idx`.
    fn read_node6(&self, idx: u32) -> OpResult<Node6>;
    /// Makes `record` the live record of `slot` (0: none), atomically for readers.
    fn publish(&mut self, slot: u32, record: u32) -> OpResult;
    /// The record index live in `slot`.
    fn current(&self, slot: u32) -> OpResult<u32>;
    /// Returns once no packet can still be reading anything unpublished before the call.
    fn barrier(&mut self) -> OpResult;
    /// The same barrier as a call that needs nothing of the backend, so a caller can wait
    /// for it without holding the publisher (see `Dataplane::take_reclaim`). `None`: use
    /// [`MapBackend::barrier`].
    fn detached_barrier(&self) -> Option<Box<dyn FnOnce() -> OpResult + Send>> {
        None
    }
    /// Zeroes the `(slot, verdict, reason)` counters of `slots` (before they are reused), in
    /// as few calls as the backend allows: 10k new customers are one call, not 10k.
    fn reset_slot_counters(&mut self, slots: &[u32]) -> OpResult;
    /// Zeroes the hit counters of entry ids (before the ids are reused).
    fn reset_entry_hits(&mut self, ids: &[u32]) -> OpResult;
    /// Counter at `index`, summed over CPUs.
    fn read_counter(&self, index: u32) -> OpResult<Counter>;
    /// Entry hits of `id`, summed over CPUs.
    fn read_entry_hits(&self, id: u32) -> OpResult<Counter>;

    /// The `(verdict, reason)` counters of a slot.
    fn read_slot_counters(&self, slot: u32) -> OpResult<SlotCounters> {
        let slots = self.capacities().slots;
        slot_indices(slot, slots)
            .map(|i| self.read_counter(i))
            .collect::<OpResult<Vec<_>>>()
            .map(SlotCounters)
    }

    /// Every `(slot, verdict, reason)` counter in one bulk read.
    fn read_counter_table(&self) -> OpResult<CounterTable> {
        let slots = self.capacities().slots;
        Ok(CounterTable::new(
            slots,
            self.read_counters_bulk(false, 0, PER_SLOT * slots)?,
        ))
    }

    /// `count` consecutive counters from `start` (of `COUNTERS`, or of `ENTRY_HITS` with
    /// `hits`), summed over CPUs.
    fn read_counters_bulk(&self, hits: bool, start: u32, count: u32) -> OpResult<Vec<Counter>> {
        (start..start + count)
            .map(|i| {
                if hits {
                    self.read_entry_hits(i)
                } else {
                    self.read_counter(i)
                }
            })
            .collect()
    }
}

/// Maps as plain vectors; `barrier` only counts calls.
#[derive(Clone, Debug)]
pub struct MemBackend {
    pub caps: Capacities,
    pub cur: Vec<u32>,
    pub records: Vec<Record>,
    pub nodes4: Vec<Node4>,
    pub nodes6: Vec<Node6>,
    pub chain: Vec<ChainLink>,
    pub counters: Vec<Counter>,
    pub hits: Vec<Counter>,
    pub rules: Vec<Rule>,
    pub rule_cidrs: Vec<RuleCidr>,
    pub rule_stats: Vec<RuleCounter>,
    pub barriers: u32,
    /// Calls of `reset_slot_counters` (one per apply that adds customers, however many).
    pub slot_resets: u32,
    /// Fail the n-th write from now (for rollback tests); 0 = never.
    pub fail_write_in: u32,
    /// Fail this many barriers from now (for the "published but not reclaimed" path).
    pub fail_barriers: u32,
}

impl MemBackend {
    pub fn new(caps: Capacities) -> MemBackend {
        MemBackend {
            caps,
            cur: vec![0; caps.slots as usize],
            records: vec![Record::EMPTY; caps.records as usize],
            nodes4: vec![Node4::PAD; caps.nodes4 as usize],
            nodes6: vec![Node6::PAD; caps.nodes6 as usize],
            chain: vec![ChainLink::default(); caps.chain as usize],
            counters: vec![Counter::default(); (caps.slots * PER_SLOT) as usize],
            hits: vec![Counter::default(); caps.entry_ids as usize],
            rules: vec![Rule::EMPTY; caps.rules as usize],
            rule_cidrs: vec![RuleCidr::default(); caps.rule_cidrs as usize],
            rule_stats: vec![RuleCounter::default(); caps.buckets as usize],
            barriers: 0,
            slot_resets: 0,
            fail_write_in: 0,
            fail_barriers: 0,
        }
    }

    fn maybe_fail(&mut self, map: &'static str) -> OpResult {
        if self.fail_write_in > 0 {
            self.fail_write_in -= 1;
            if self.fail_write_in == 0 {
                return Err(MapOpError {
                    map,
                    op: "update",
                    detail: "injected failure".into(),
                });
            }
        }
        Ok(())
    }
}

fn get<T: Copy>(map: &'static str, src: &[T], idx: u32) -> OpResult<T> {
    src.get(idx as usize).copied().ok_or(MapOpError {
        map,
        op: "lookup",
        detail: format!("index {idx} out of bounds"),
    })
}

fn put<T: Copy>(map: &'static str, dst: &mut [T], at: u32, src: &[T]) -> OpResult {
    let at = at as usize;
    let Some(slice) = dst.get_mut(at..at + src.len()) else {
        return Err(MapOpError {
            map,
            op: "update",
            detail: format!("index {} out of bounds", at + src.len()),
        });
    };
    slice.copy_from_slice(src);
    Ok(())
}

impl MapBackend for MemBackend {
    fn capacities(&self) -> Capacities {
        self.caps
    }

    fn write_nodes4(&mut self, at: u32, nodes: &[Node4]) -> OpResult {
        self.maybe_fail("NODES4")?;
        put("NODES4", &mut self.nodes4, at, nodes)
    }

    fn write_nodes6(&mut self, at: u32, nodes: &[Node6]) -> OpResult {
        self.maybe_fail("NODES6")?;
        put("NODES6", &mut self.nodes6, at, nodes)
    }

    fn write_chain(&mut self, at: u32, links: &[ChainLink]) -> OpResult {
        self.maybe_fail("CHAIN")?;
        put("CHAIN", &mut self.chain, at, links)
    }

    fn write_record(&mut self, idx: u32, rec: &Record) -> OpResult {
        self.maybe_fail("RECORDS")?;
        put("RECORDS", &mut self.records, idx, std::slice::from_ref(rec))
    }

    fn write_rules(&mut self, at: u32, rules: &[Rule]) -> OpResult {
        self.maybe_fail("RULES")?;
        put("RULES", &mut self.rules, at, rules)
    }

    fn write_rule_cidrs(&mut self, at: u32, cidrs: &[RuleCidr]) -> OpResult {
        put("RULE_CIDRS", &mut self.rule_cidrs, at, cidrs)
    }

    fn reset_stats(&mut self, ids: &[u32]) -> OpResult {
        for id in ids {
            self.rule_stats[*id as usize] = RuleCounter::default();
        }
        Ok(())
    }

    fn read_rule_stats(&self, start: u32, count: u32) -> OpResult<Vec<RuleCounter>> {
        Ok(self.rule_stats[start as usize..(start + count) as usize].to_vec())
    }

    fn read_record(&self, idx: u32) -> OpResult<Record> {
        self.records.get(idx as usize).copied().ok_or(MapOpError {
            map: "RECORDS",
            op: "lookup",
            detail: format!("index {idx} out of bounds"),
        })
    }

    fn read_node4(&self, idx: u32) -> OpResult<Node4> {
        get("NODES4", &self.nodes4, idx)
    }

    fn read_node6(&self, idx: u32) -> OpResult<Node6> {
        get("NODES6", &self.nodes6, idx)
    }

    fn publish(&mut self, slot: u32, record: u32) -> OpResult {
        put("CUR", &mut self.cur, slot, &[record])
    }

    fn current(&self, slot: u32) -> OpResult<u32> {
        self.cur.get(slot as usize).copied().ok_or(MapOpError {
            map: "CUR",
            op: "lookup",
            detail: format!("slot {slot} out of bounds"),
        })
    }

    fn barrier(&mut self) -> OpResult {
        self.barriers += 1;
        if self.fail_barriers > 0 {
            self.fail_barriers -= 1;
            return Err(MapOpError {
                map: "barrier",
                op: "update",
                detail: "injected failure".into(),
            });
        }
        Ok(())
    }

    fn reset_slot_counters(&mut self, slots: &[u32]) -> OpResult {
        self.slot_resets += 1;
        for idx in slots.iter().flat_map(|&s| slot_indices(s, self.caps.slots)) {
            self.counters[idx as usize] = Counter::default();
        }
        Ok(())
    }

    fn reset_entry_hits(&mut self, ids: &[u32]) -> OpResult {
        for id in ids {
            self.hits[*id as usize] = Counter::default();
        }
        Ok(())
    }

    fn read_counter(&self, index: u32) -> OpResult<Counter> {
        Ok(self
            .counters
            .get(index as usize)
            .copied()
            .unwrap_or_default())
    }

    fn read_entry_hits(&self, id: u32) -> OpResult<Counter> {
        Ok(self.hits.get(id as usize).copied().unwrap_or_default())
    }
}
