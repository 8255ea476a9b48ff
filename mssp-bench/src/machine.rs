//! What this machine allows: the latency of one dependent load that misses, measured by a
//! pointer chase over buffers of growing size, on the CPU the program under test runs on.
//! The breakdown's steps are compared with it: a step that costs about one such load is at
//! the floor the hardware sets, whatever the code does.

use std::time::Instant;

use rand::seq::SliceRandom;
use serde_json::{Value, json};

/// One cache line: the chase touches one per load.
const LINE: usize = 64;

/// Pages a buffer is backed by. BPF array maps are always 4 KiB pages; huge pages show
/// how much of a miss is the page walk.
#[derive(Clone, Copy, Debug)]
pub enum Pages {
    Small,
    Huge,
}

/// Nanoseconds per dependent load over a random cycle through every line of a `bytes`
/// buffer (`loads` loads after a warm-up of up to one lap; building the cycle wrote every
/// line), on the calling thread.
pub fn dependent_load_ns(bytes: usize, pages: Pages, loads: usize) -> anyhow::Result<f64> {
    chase_ns(bytes, pages, loads, 1)
}

/// As [`dependent_load_ns`], with `chains` independent chases advanced together (each
/// step loads one line of each): nanoseconds per step. Against one chain it shows how
/// many misses this machine overlaps (1.0: fully, `chains`: not at all).
pub fn chase_ns(bytes: usize, pages: Pages, loads: usize, chains: usize) -> anyhow::Result<f64> {
    let lines = bytes / LINE;
    anyhow::ensure!(
        lines >= 2,
        "a chase needs at least two lines (got {bytes} bytes)"
    );
    // SAFETY: an anonymous private mapping, unmapped below; no other reference to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    anyhow::ensure!(
        base != libc::MAP_FAILED,
        "mmap of {bytes} bytes: {}",
        std::io::Error::last_os_error()
    );
    let advice = match pages {
        Pages::Small => libc::MADV_NOHUGEPAGE,
        Pages::Huge => libc::MADV_HUGEPAGE,
    };
    // SAFETY: the range is the mapping just made. Advice is a hint; failure only means
    // the kernel's default pages, which the figure then measures.
    unsafe { libc::madvise(base, bytes, advice) };
    let result = chase(base.cast::<usize>(), lines, loads, chains);
    // SAFETY: the mapping made above; nothing points into it any more.
    unsafe { libc::munmap(base, bytes) };
    Ok(result)
}

fn chase(base: *mut usize, lines: usize, loads: usize, chains: usize) -> f64 {
    let stride = LINE / size_of::<usize>();
    let mut order: Vec<usize> = (0..lines).collect();
    order.shuffle(&mut rand::rng());
    for w in 0..lines {
        let (from, to) = (order[w], order[(w + 1) % lines]);
        // SAFETY: both indices are < lines, so inside the mapping; the cycle stores the
        // address of the next line in the first word of each line.
        unsafe { *base.add(from * stride) = base.add(to * stride) as usize };
    }
    // Chains start evenly spaced around the one cycle, so they never meet in `loads` steps
    // (the caller keeps loads * chains within a lap or accepts the overlap as warm lines).
    let mut p = [0usize; 4];
    let chains = chains.clamp(1, p.len());
    for (c, slot) in p.iter_mut().enumerate().take(chains) {
        // SAFETY: an index < lines, inside the mapping.
        *slot = unsafe { base.add(order[c * lines / chains] * stride) } as usize;
    }
    let step = |p: &mut [usize; 4]| {
        for slot in p.iter_mut().take(chains) {
            // SAFETY: every p is the address of a line of the cycle.
            *slot = unsafe { std::ptr::read_volatile(*slot as *const usize) };
        }
    };
    // A warm-up (bounded), so the figure is the steady state, not first-touch faults.
    for _ in 0..(lines / chains).min(loads) {
        step(&mut p);
    }
    let t = Instant::now();
    for _ in 0..loads {
        step(&mut p);
    }
    let ns = t.elapsed().as_nanos() as f64 / loads as f64;
    std::hint::black_box(p);
    ns
}

/// Pins the calling thread to `cpu` (best effort; the figure says where it ran).
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The sizes measured: inside L2, past it, and the size of the 1M policy's maps.
pub const SIZES_MIB: [(usize, Pages); 5] = [
    (1, Pages::Small),
    (4, Pages::Small),
    (64, Pages::Small),
    (256, Pages::Small),
    (256, Pages::Huge),
];

/// The machine section of the summary: dependent-load latency by buffer size, measured on
/// `cpu` (a thread of its own, so the caller's affinity is untouched).
pub fn measure(cpu: usize, loads: usize) -> anyhow::Result<Value> {
    std::thread::spawn(move || -> anyhow::Result<Value> {
        let pinned = pin(cpu);
        let mut lat = serde_json::Map::new();
        for (mib, pages) in SIZES_MIB {
            let ns = dependent_load_ns(mib << 20, pages, loads)?;
            let key = match pages {
                Pages::Small => format!("{mib}_mib_4k_pages"),
                Pages::Huge => format!("{mib}_mib_huge_pages"),
            };
            lat.insert(key, json!((ns * 10.0).round() / 10.0));
        }
        // Two independent misses at a time, over the largest buffer with 4 KiB pages: what
        // overlapping two of the data path's cold steps could save at best.
        let one = lat["256_mib_4k_pages"].as_f64().unwrap_or(f64::NAN);
        let two = chase_ns(256 << 20, Pages::Small, loads, 2)?;
        Ok(json!({
            "cpu": if pinned { json!(cpu) } else { json!("unpinned") },
            "dependent_load_ns": lat,
            "two_chains_256_mib_4k_pages_ns_per_step": (two * 10.0).round() / 10.0,
            "overlap_of_two_misses": ((two / one) * 100.0).round() / 100.0,
            "method": "pointer chase: one random cycle through every 64-byte line of an anonymous buffer, one dependent load per line, after a warm-up of up to one lap (building the cycle wrote every line); two chains: two independent chases advanced together, ns per step of both (overlap 1.0 = two misses cost one, 2.0 = no overlap)",
        }))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the machine measurement's thread panicked"))?
}

/// One cold dependent access on this machine, as the data path meets it (4 KiB pages, a
/// buffer far larger than any cache): the unit the breakdown's steps are expressed in.
pub fn miss_ns(machine: &Value) -> Option<f64> {
    machine["dependent_load_ns"]["256_mib_4k_pages"].as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chase_in_l1_is_cheaper_than_one_past_every_cache() {
        let small = dependent_load_ns(16 << 10, Pages::Small, 200_000).unwrap();
        let large = dependent_load_ns(64 << 20, Pages::Small, 200_000).unwrap();
        assert!(small.is_finite() && small > 0.0, "16 KiB: {small} ns");
        assert!(large.is_finite() && large > 0.0, "64 MiB: {large} ns");
        // Generous: an L1 hit is ~1 ns, a DRAM miss ~100 ns; even a noisy machine keeps
        // them apart by far more than 2x.
        assert!(
            large > 2.0 * small,
            "16 KiB {small} ns vs 64 MiB {large} ns"
        );
    }

    #[test]
    fn a_buffer_too_small_for_a_cycle_is_an_error() {
        let e = dependent_load_ns(64, Pages::Small, 10).unwrap_err();
        assert!(e.to_string().contains("at least two lines"), "{e}");
    }

    #[test]
    fn the_section_names_every_size_and_the_unit_is_found() {
        let m = measure(0, 20_000).unwrap();
        eprintln!("this machine: {m}");
        for key in [
            "1_mib_4k_pages",
            "4_mib_4k_pages",
            "64_mib_4k_pages",
            "256_mib_4k_pages",
            "256_mib_huge_pages",
        ] {
            let ns = m["dependent_load_ns"][key].as_f64().unwrap();
            assert!(ns.is_finite() && ns > 0.0, "{key}: {ns}");
        }
        assert!(miss_ns(&m).unwrap() > 0.0);
        let overlap = m["overlap_of_two_misses"].as_f64().unwrap();
        assert!(overlap.is_finite() && overlap > 0.0, "overlap {overlap}");
    }
}
