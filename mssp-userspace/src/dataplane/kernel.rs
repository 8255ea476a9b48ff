//! [`MapBackend`] over the program's maps in the kernel.

use std::os::fd::{AsFd, OwnedFd};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray},
};
use mssp_common::{
    abi::{
        Bucket, ChainLink, Counter, Node4, Node6, Record, Rule, RuleCidr, RuleCounter, map_names,
    },
    reason::{NREASONS, NVERDICTS},
};

use super::{
    backend::{Capacities, MapBackend, MapOpError, OpResult},
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
    ncpus: usize,
    cur: MappedU32,
    _cur_fd: OwnedFd,
    records: Array<MapData, Record>,
    records_fd: OwnedFd,
    nodes4_fd: OwnedFd,
    nodes6_fd: OwnedFd,
    chain_fd: OwnedFd,
    counters: PerCpuArray<MapData, Counter>,
    counters_fd: OwnedFd,
    hits: PerCpuArray<MapData, Counter>,
    hits_fd: OwnedFd,
    rules_fd: OwnedFd,
    cidrs_fd: OwnedFd,
    rule_stats_fd: OwnedFd,
    buckets_fd: OwnedFd,
    _src_buckets: Map,
    barrier: Barrier,
}

impl KernelBackend {
    /// Takes the policy and counter maps out of a loaded program.
    pub fn from_ebpf(ebpf: &mut Ebpf) -> OpResult<KernelBackend> {
        let (cur, cur_fd, slots) = take(ebpf, map_names::CUR)?;
        let (records, records_fd, nrec) = take(ebpf, map_names::RECORDS)?;
        let (_n4, nodes4_fd, n4) = take(ebpf, map_names::NODES4)?;
        let (_n6, nodes6_fd, n6) = take(ebpf, map_names::NODES6)?;
        let (_c, chain_fd, nchain) = take(ebpf, map_names::CHAIN)?;
        let (counters, counters_fd, _) = take(ebpf, map_names::COUNTERS)?;
        let (hits, hits_fd, nids) = take(ebpf, map_names::ENTRY_HITS)?;
        let (_r, rules_fd, nrules) = take(ebpf, map_names::RULES)?;
        let (_rc, cidrs_fd, ncidrs) = take(ebpf, map_names::RULE_CIDRS)?;
        let (_rs, rule_stats_fd, _) = take(ebpf, map_names::RULE_STATS)?;
        let (_b, buckets_fd, nbuckets) = take(ebpf, map_names::BUCKETS)?;
        let (src_buckets, _, _) = take(ebpf, map_names::SOURCE_BUCKETS)?;
        let ncpus = aya::util::nr_cpus()
            .map_err(|(f, e)| err("ENTRY_HITS", "nr_cpus", format!("{f}: {e}")))?;
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
                entry_ids: nids,
                rules: nrules,
                rule_cidrs: ncidrs,
                buckets: nbuckets,
            },
            ncpus,
            cur: mapped,
            _cur_fd: cur_fd,
            records: Array::try_from(records).map_err(|e| err(map_names::RECORDS, "open", e))?,
            records_fd,
            nodes4_fd,
            nodes6_fd,
            chain_fd,
            counters: PerCpuArray::try_from(counters)
                .map_err(|e| err(map_names::COUNTERS, "open", e))?,
            counters_fd,
            hits: PerCpuArray::try_from(hits).map_err(|e| err(map_names::ENTRY_HITS, "open", e))?,
            hits_fd,
            rules_fd,
            cidrs_fd,
            rule_stats_fd,
            buckets_fd,
            _src_buckets: src_buckets,
            barrier: Barrier::new().map_err(|e| err("barrier", "create", e))?,
        })
    }

    pub fn ncpus(&self) -> usize {
        self.ncpus
    }
}

fn sum(values: &[Counter]) -> Counter {
    values.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
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
        percpu_zero_batch(
            self.rule_stats_fd.as_fd(),
            ids,
            size_of::<RuleCounter>(),
            self.ncpus,
        )
        .map_err(|e| err(map_names::RULE_STATS, "update", e))?;
        for id in ids {
            array_update_batch(self.buckets_fd.as_fd(), *id, &[Bucket::default()])
                .map_err(|e| err(map_names::BUCKETS, "update", e))?;
        }
        Ok(())
    }

    fn read_rule_stats(&self, start: u32, count: u32) -> OpResult<Vec<RuleCounter>> {
        let raw = percpu_lookup_batch(
            self.rule_stats_fd.as_fd(),
            start,
            count,
            size_of::<RuleCounter>(),
            self.ncpus,
        )
        .map_err(|e| err(map_names::RULE_STATS, "lookup batch", e))?;
        let per = size_of::<RuleCounter>() * self.ncpus;
        Ok(raw
            .chunks_exact(per)
            .map(|key| {
                key.chunks_exact(size_of::<RuleCounter>())
                    // SAFETY: RuleCounter is plain old data; each chunk is exactly one.
                    .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<RuleCounter>()) })
                    .fold(RuleCounter::default(), |a, c| RuleCounter {
                        packets: a.packets + c.packets,
                        bytes: a.bytes + c.bytes,
                        limited_packets: a.limited_packets + c.limited_packets,
                        limited_bytes: a.limited_bytes + c.limited_bytes,
                    })
            })
            .collect())
    }

    fn read_record(&self, idx: u32) -> OpResult<Record> {
        self.records
            .get(&idx, 0)
            .map_err(|e| err(map_names::RECORDS, "lookup", e))
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

    fn reset_slot_counters(&mut self, slot: u32) -> OpResult {
        let per = NVERDICTS * NREASONS;
        let keys: Vec<u32> = (slot * per..(slot + 1) * per).collect();
        percpu_zero_batch(
            self.counters_fd.as_fd(),
            &keys,
            size_of::<Counter>(),
            self.ncpus,
        )
        .map_err(|e| err(map_names::COUNTERS, "update", e))
    }

    fn reset_entry_hits(&mut self, ids: &[u32]) -> OpResult {
        if ids.is_empty() {
            return Ok(());
        }
        percpu_zero_batch(self.hits_fd.as_fd(), ids, size_of::<Counter>(), self.ncpus)
            .map_err(|e| err(map_names::ENTRY_HITS, "update", e))
    }

    fn read_counter(&self, index: u32) -> OpResult<Counter> {
        let v = self
            .counters
            .get(&index, 0)
            .map_err(|e| err(map_names::COUNTERS, "lookup", e))?;
        Ok(sum(&v))
    }

    fn read_counters_bulk(&self, hits: bool, start: u32, count: u32) -> OpResult<Vec<Counter>> {
        let (fd, name) = if hits {
            (&self.hits_fd, map_names::ENTRY_HITS)
        } else {
            (&self.counters_fd, map_names::COUNTERS)
        };
        let raw = percpu_lookup_batch(fd.as_fd(), start, count, size_of::<Counter>(), self.ncpus)
            .map_err(|e| err(name, "lookup batch", e))?;
        let per = size_of::<Counter>() * self.ncpus;
        Ok(raw
            .chunks_exact(per)
            .map(|key| {
                let cpus: Vec<Counter> = key
                    .chunks_exact(size_of::<Counter>())
                    // SAFETY: Counter is plain old data; each chunk is exactly one.
                    .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<Counter>()) })
                    .collect();
                sum(&cpus)
            })
            .collect())
    }

    fn read_entry_hits(&self, id: u32) -> OpResult<Counter> {
        let v = self
            .hits
            .get(&id, 0)
            .map_err(|e| err(map_names::ENTRY_HITS, "lookup", e))?;
        Ok(sum(&v))
    }
}
