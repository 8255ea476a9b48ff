//! The program's observation maps from userspace: the per-destination meters, the sampling
//! rate, and the ring buffer of sampled packets. What the agent's attack detection and the
//! NOC's live views (`mssp monitor`, `mssp top`) read; none of it changes a verdict.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, RingBuf},
};
use mssp_common::abi::{
    METER_SLOTS, Meter, MeterKey, MeterSlot, Sample, config_index, map_names, meter_class,
};

#[derive(Debug, thiserror::Error)]
#[error("{map}: {detail}")]
pub struct ObserveError {
    pub map: &'static str,
    pub detail: String,
}

fn err(map: &'static str, e: impl std::fmt::Display) -> ObserveError {
    ObserveError {
        map,
        detail: e.to_string(),
    }
}

/// The meters (memory-mapped) and the sampling rate.
pub struct Meters {
    map: MappedSlots,
    _meters: Map,
    config: Array<MapData, u64>,
    /// Per slot: the key and the 32-bit counts last read, and the 64-bit totals they add
    /// up to (the data path's counts wrap).
    seen: Vec<(MeterKey, [u32; meter_class::N], u64)>,
    totals: std::collections::HashMap<MeterKey, Meter>,
}

/// The meter cache's memory: `len` slots of 128 bytes from a page-aligned base.
struct MappedSlots {
    ptr: std::ptr::NonNull<MeterSlot>,
    len: usize,
    bytes: usize,
}

// SAFETY: shared memory, only read (volatile) from this side.
unsafe impl Send for MappedSlots {}

impl Drop for MappedSlots {
    fn drop(&mut self) {
        // SAFETY: unmapping what `mmap` returned, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// The ring buffer of sampled packets (one reader).
pub struct SampleRing {
    ring: RingBuf<MapData>,
}

/// Takes the observation maps out of a loaded program.
pub fn take(ebpf: &mut Ebpf) -> Result<(Meters, SampleRing), ObserveError> {
    let m = ebpf
        .take_map(map_names::METERS)
        .ok_or_else(|| err(map_names::METERS, "the program has no such map"))?;
    let c = ebpf
        .take_map(map_names::CONFIG)
        .ok_or_else(|| err(map_names::CONFIG, "the program has no such map"))?;
    let r = ebpf
        .take_map(map_names::SAMPLES)
        .ok_or_else(|| err(map_names::SAMPLES, "the program has no such map"))?;
    let data = match &m {
        Map::Array(d) => d,
        other => {
            return Err(err(
                map_names::METERS,
                format!("unexpected map type {other:?}"),
            ));
        }
    };
    let len = data
        .info()
        .map_err(|e| err(map_names::METERS, e))?
        .max_entries() as usize;
    let bytes = (len * size_of::<MeterSlot>()).div_ceil(4096) * 4096;
    // SAFETY: mapping a BPF_F_MMAPABLE array read-only; the kernel checks size and flags.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&data.fd().as_fd()),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(err(map_names::METERS, std::io::Error::last_os_error()));
    }
    let map = MappedSlots {
        ptr: std::ptr::NonNull::new(p.cast())
            .ok_or_else(|| err(map_names::METERS, "mmap gave null"))?,
        len,
        bytes,
    };
    Ok((
        Meters {
            map,
            _meters: m,
            config: Array::try_from(c).map_err(|e| err(map_names::CONFIG, e))?,
            seen: vec![(MeterKey::default(), [0; meter_class::N], 0); len],
            totals: std::collections::HashMap::new(),
        },
        SampleRing {
            ring: RingBuf::try_from(r).map_err(|e| err(map_names::SAMPLES, e))?,
        },
    ))
}

impl Meters {
    /// Every meter in use, summed over CPUs, as cumulative 64-bit counts: what each slot
    /// added since the last read (32-bit differences, so wrapping is harmless when read at
    /// least every few minutes) goes to its key's total. A slot taken over by another key
    /// starts that key from what it holds. Keys no slot holds any more are forgotten.
    pub fn read(&mut self) -> Vec<(MeterKey, Meter)> {
        let empty = MeterKey::default();
        let mut live: std::collections::HashSet<MeterKey> = std::collections::HashSet::new();
        for i in 0..self.map.len {
            // SAFETY: in bounds of the live mapping; aligned (64-byte slots, page base).
            let slot = unsafe { std::ptr::read_volatile(self.map.ptr.as_ptr().add(i)) };
            if slot.key == empty {
                continue;
            }
            let (key, last, last_bytes) = &mut self.seen[i];
            let fresh = *key != slot.key;
            let t = self.totals.entry(slot.key).or_default();
            for c in 0..meter_class::N {
                let before = if fresh { 0 } else { last[c] };
                t.packets[c] += slot.packets[c].wrapping_sub(before) as u64;
            }
            let before = if fresh { 0 } else { *last_bytes };
            t.bytes[meter_class::ALL] += slot.bytes.wrapping_sub(before);
            *key = slot.key;
            *last = slot.packets;
            *last_bytes = slot.bytes;
            live.insert(slot.key);
        }
        self.totals.retain(|k, _| live.contains(k));
        self.totals.iter().map(|(k, m)| (*k, *m)).collect()
    }

    /// Slots per CPU (what the program was built with).
    pub const SLOTS_PER_CPU: u32 = METER_SLOTS;

    /// Samples one packet in `every` (rounded up to a power of two, at least 1).
    pub fn set_sample_every(&mut self, every: u64) -> Result<u64, ObserveError> {
        let every = every.clamp(1, 1 << 20).next_power_of_two();
        self.config
            .set(config_index::SAMPLE_EVERY, every, 0)
            .map_err(|e| err(map_names::CONFIG, e))?;
        Ok(every)
    }

    pub fn sample_every(&self) -> u64 {
        match self.config.get(&config_index::SAMPLE_EVERY, 0) {
            Ok(0) | Err(_) => mssp_common::abi::DEFAULT_SAMPLE_EVERY,
            Ok(v) => v,
        }
    }
}

impl SampleRing {
    /// Hands every sample waiting in the ring to `f`; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(&Sample)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<Sample>() {
                // SAFETY: the program writes whole `Sample` records; read unaligned.
                let s = unsafe { core::ptr::read_unaligned(item.as_ptr() as *const Sample) };
                f(&s);
                n += 1;
            }
        }
        n
    }
}

impl AsFd for SampleRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for SampleRing {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
