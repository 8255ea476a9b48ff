//! [`MapBackend`] over the program's maps in the kernel.

use std::os::fd::{AsFd, OwnedFd};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData},
};
use mssp_common::abi::{
    Bucket, ChainLink, Counter, Node4, Node6, Record, Rule, RuleCidr, RuleCounter, map_names,
};

use super::{
    backend::{Capacities, MapBackend, MapOpError, OpResult},
    counters::slot_indices,
    sys::{Barrier, MappedU32, array_update_batch, percpu_lookup_batch, percpu_zero_batch},
};

fn err(map: &'static str, op: &'static str, e: impl std::fmt::Display) -> MapOpError {
    MapOpError {
        map,
        op,
        detail: e.to_string(),
    }
}

/// A map by name, with a second descriptor for the raw batch calls and its size.
fn take(ebpf: &mut Ebpf, name: &'static str) -> OpResult<(Map, OwnedFd, u32)> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| err(name, "open", "the program has no such map"))?;
    let data = match &map {
        Map::Array(d) | Map::PerCpuArray(d) => d,
        Map::LruHashMap(d) => d,
        other => return Err(err(name, "open", format!("unexpected map type {other:?}"))),
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| err(name, "dup", e))?;
    let max = data.info().map_err(|e| err(name, "info", e))?.max_entries();
    Ok((map, fd, max))
}

pub struct KernelBackend {
    caps: Capacities,
    cur: MappedU32,
    _cur_fd: OwnedFd,
    records: Array<MapData, Record>,
    records_fd: OwnedFd,
    nodes4: Array<MapData, Node4>,
    nodes4_fd: OwnedFd,
    nodes6: Array<MapData, Node6>,
    nodes6_fd: OwnedFd,
    chain_fd: OwnedFd,
    counters: Striped,
    hits: Striped,
    rules_fd: OwnedFd,
    cidrs_fd: OwnedFd,
    rule_stats: Striped,
    buckets_fd: OwnedFd,
    _src_buckets: Map,
    barrier: Barrier,
}

impl KernelBackend {
    /// Takes the policy and counter maps out of a loaded program.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> OpResult<KernelBackend> {
        let (cur, cur_fd, slots) = take(ebpf, map_names::CUR)?;
        let (records, records_fd, nrec) = take(ebpf, map_names::RECORDS)?;
        let (nodes4, nodes4_fd, n4) = take(ebpf, map_names::NODES4)?;
        let (nodes6, nodes6_fd, n6) = take(ebpf, map_names::NODES6)?;
        let (_c, chain_fd, nchain) = take(ebpf, map_names::CHAIN)?;
        let cpus = crate::capacity::ncpus();
        let counters = Striped::take(ebpf, map_names::COUNTERS, cpus)?;
        let hits = Striped::take(ebpf, map_names::ENTRY_HITS, cpus)?;
        let (_r, rules_fd, nrules) = take(ebpf, map_names::RULES)?;
        let (_rc, cidrs_fd, ncidrs) = take(ebpf, map_names::RULE_CIDRS)?;
        let rule_stats = Striped::take(ebpf, map_names::RULE_STATS, cpus)?;
        let (_b, buckets_fd, nbuckets) = take(ebpf, map_names::BUCKETS)?;
        let (src_buckets, _, _) = take(ebpf, map_names::SOURCE_BUCKETS)?;
        let mapped =
            MappedU32::new(cur_fd.as_fd(), slots).map_err(|e| err(map_names::CUR, "mmap", e))?;
        drop(cur);
        Ok(KernelBackend {
            caps: Capacities {
                slots,
                records: nrec,
                nodes4: n4,
                nodes6: n6,
                chain: nchain,
                entry_ids: hits.stride,
                rules: nrules,
                rule_cidrs: ncidrs,
                buckets: nbuckets,
            },
            cur: mapped,
            _cur_fd: cur_fd,
            records: Array::try_from(records).map_err(|e| err(map_names::RECORDS, "open", e))?,
            records_fd,
            nodes4: Array::try_from(nodes4).map_err(|e| err(map_names::NODES4, "open", e))?,
            nodes4_fd,
            nodes6: Array::try_from(nodes6).map_err(|e| err(map_names::NODES6, "open", e))?,
            nodes6_fd,
            chain_fd,
            counters,
            hits,
            rules_fd,
            cidrs_fd,
            rule_stats,
            buckets_fd,
            _src_buckets: src_buckets,
            barrier: Barrier::new().map_err(|e| err("barrier", "create", e))?,
        })
    }
}

/// Counters the data path adds to, summed over CPUs when read.
trait Summable: Copy + Default {
    fn add(self, other: Self) -> Self;
}

impl Summable for Counter {
    fn add(self, o: Self) -> Self {
        Counter {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl Summable for RuleCounter {
    fn add(self, o: Self) -> Self {
        RuleCounter {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
            limited_packets: self.limited_packets + o.limited_packets,
            limited_bytes: self.limited_bytes + o.limited_bytes,
        }
    }
}

/// A counter map striped by CPU: a plain array of `cpus` blocks of `stride` entries; CPU
/// `c` adds to entry `c * stride + i`. (A per-CPU array costs the data path a per-CPU
/// address computation per access; one stripe per CPU keeps the writes just as private.)
struct Striped {
    name: &'static str,
    fd: OwnedFd,
    stride: u32,
    cpus: u32,
    _map: Map,
}

impl Striped {
    fn take(ebpf: &mut Ebpf, name: &'static str, cpus: u32) -> OpResult<Striped> {
        let (map, fd, max) = take(ebpf, name)?;
        if max % cpus != 0 {
            return Err(err(
                name,
                "open",
                format!("{max} entries is not a whole stripe for each of {cpus} CPUs"),
            ));
        }
        Ok(Striped {
            name,
            fd,
            stride: max / cpus,
            cpus,
            _map: map,
        })
    }

    /// Entries `start..start + count`, each summed over the CPU stripes.
    fn read<T: Summable>(&self, start: u32, count: u32) -> OpResult<Vec<T>> {
        if start.checked_add(count).is_none_or(|end| end > self.stride) {
            return Err(err(
                self.name,
                "lookup",
                format!(
                    "entries {start}..+{count} out of bounds (stride {})",
                    self.stride
                ),
            ));
        }
        let mut out = vec![T::default(); count as usize];
        for cpu in 0..self.cpus {
            let raw = percpu_lookup_batch(
                self.fd.as_fd(),
                cpu * self.stride + start,
                count,
                size_of::<T>(),
                1,
            )
            .map_err(|e| err(self.name, "lookup batch", e))?;
            for (o, c) in out.iter_mut().zip(raw.chunks_exact(size_of::<T>())) {
                // SAFETY: T is plain old data; each chunk is exactly one.
                *o = o.add(unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<T>()) });
            }
        }
        Ok(out)
    }

    /// Zeroes `keys` in every CPU's stripe.
    fn zero<T>(&self, keys: &[u32]) -> OpResult {
        let mut all = Vec::with_capacity(keys.len() * self.cpus as usize);
        for cpu in 0..self.cpus {
            all.extend(keys.iter().map(|k| cpu * self.stride + k));
        }
        percpu_zero_batch(self.fd.as_fd(), &all, size_of::<T>(), 1)
            .map_err(|e| err(self.name, "update", e))
    }
}

impl MapBackend for KernelBackend {
    fn capacities(&self) -> Capacities {
        self.caps
    }

    fn write_nodes4(&mut self, at: u32, nodes: &[Node4]) -> OpResult {
        array_update_batch(self.nodes4_fd.as_fd(), at, nodes)
            .map_err(|e| err(map_names::NODES4, "update", e))
    }

    fn write_nodes6(&mut self, at: u32, nodes: &[Node6]) -> OpResult {
        array_update_batch(self.nodes6_fd.as_fd(), at, nodes)
            .map_err(|e| err(map_names::NODES6, "update", e))
    }

    fn write_chain(&mut self, at: u32, links: &[ChainLink]) -> OpResult {
        array_update_batch(self.chain_fd.as_fd(), at, links)
            .map_err(|e| err(map_names::CHAIN, "update", e))
    }

    fn write_record(&mut self, idx: u32, rec: &Record) -> OpResult {
        array_update_batch(self.records_fd.as_fd(), idx, std::slice::from_ref(rec))
            .map_err(|e| err(map_names::RECORDS, "update", e))
    }

    fn write_rules(&mut self, at: u32, rules: &[Rule]) -> OpResult {
        array_update_batch(self.rules_fd.as_fd(), at, rules)
            .map_err(|e| err(map_names::RULES, "update", e))
    }

    fn write_rule_cidrs(&mut self, at: u32, cidrs: &[RuleCidr]) -> OpResult {
        array_update_batch(self.cidrs_fd.as_fd(), at, cidrs)
            .map_err(|e| err(map_names::RULE_CIDRS, "update", e))
    }

    fn reset_stats(&mut self, ids: &[u32]) -> OpResult {
        if ids.is_empty() {
            return Ok(());
        }
        self.rule_stats.zero::<RuleCounter>(ids)?;
        for id in ids {
            array_update_batch(self.buckets_fd.as_fd(), *id, &[Bucket::default()])
                .map_err(|e| err(map_names::BUCKETS, "update", e))?;
        }
        Ok(())
    }

    fn read_rule_stats(&self, start: u32, count: u32) -> OpResult<Vec<RuleCounter>> {
        self.rule_stats.read(start, count)
    }

    fn read_record(&self, idx: u32) -> OpResult<Record> {
        self.records
            .get(&idx, 0)
            .map_err(|e| err(map_names::RECORDS, "lookup", e))
    }

    fn read_node4(&self, idx: u32) -> OpResult<Node4> {
        self.nodes4
            .get(&idx, 0)
            .map_err(|e| err(map_names::NODES4, "lookup", e))
    }

    fn read_node6(&self, idx: u32) -> OpResult<Node6> {
        self.nodes6
            .get(&idx, 0)
            .map_err(|e| err(map_names::NODES6, "lookup", e))
    }

    fn publish(&mut self, slot: u32, record: u32) -> OpResult {
        if slot >= self.caps.slots {
            return Err(err(
                map_names::CUR,
                "update",
                format!("slot {slot} out of bounds"),
            ));
        }
        self.cur.store(slot, record);
        Ok(())
    }

    fn current(&self, slot: u32) -> OpResult<u32> {
        if slot >= self.caps.slots {
            return Err(err(
                map_names::CUR,
                "lookup",
                format!("slot {slot} out of bounds"),
            ));
        }
        Ok(self.cur.load(slot))
    }

    fn barrier(&mut self) -> OpResult {
        self.barrier.wait().map_err(|e| err("barrier", "update", e))
    }

    fn detached_barrier(&self) -> Option<Box<dyn FnOnce() -> OpResult + Send>> {
        let b = self.barrier.clone();
        Some(Box::new(move || {
            b.wait().map_err(|e| err("barrier", "update", e))
        }))
    }

    fn reset_slot_counters(&mut self, slots: &[u32]) -> OpResult {
        if slots.is_empty() {
            return Ok(());
        }
        let keys: Vec<u32> = slots
            .iter()
            .flat_map(|&s| slot_indices(s, self.caps.slots))
            .collect();
        self.counters.zero::<Counter>(&keys)
    }

    fn reset_entry_hits(&mut self, ids: &[u32]) -> OpResult {
        if ids.is_empty() {
            return Ok(());
        }
        self.hits.zero::<Counter>(ids)
    }

    fn read_counter(&self, index: u32) -> OpResult<Counter> {
        Ok(self.counters.read::<Counter>(index, 1)?[0])
    }

    fn read_counters_bulk(&self, hits: bool, start: u32, count: u32) -> OpResult<Vec<Counter>> {
        if hits {
            self.hits.read(start, count)
        } else {
            self.counters.read(start, count)
        }
    }

    fn read_entry_hits(&self, id: u32) -> OpResult<Counter> {
        Ok(self.hits.read::<Counter>(id, 1)?[0])
    }
}
