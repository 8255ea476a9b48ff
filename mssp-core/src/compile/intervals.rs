//! Prefixes -> disjoint address intervals, each carrying the value of what covers it.
//! This is where longest-prefix match is decided, once, for every address at the same time.

/// A prefix of one family (start and end inclusive) and the caller's index for it.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub start: u128,
    pub end: u128,
    pub idx: usize,
}

/// Cuts `[0, max]` into intervals at every prefix boundary. `value(stack)` receives the items
/// covering an interval, outermost first (empty: nothing covers it), and returns the
/// interval's value. Adjacent intervals with equal values are merged. Prefixes either nest
/// or are disjoint, which is what makes a stack enough; `items` must not hold the same
/// prefix twice.
///
/// Returns `(start, value)` pairs sorted by start; the first starts at 0.
pub fn sweep(
    items: &mut [Item],
    max: u128,
    mut value: impl FnMut(&[usize]) -> u32,
) -> Vec<(u128, u32)> {
    items.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<(u128, u32)> = Vec::with_capacity(items.len() * 2 + 1);
    let mut stack: Vec<Item> = Vec::new();
    let mut ids: Vec<usize> = Vec::new();

    fn emit(out: &mut Vec<(u128, u32)>, start: u128, v: u32) {
        if out.last().is_some_and(|&(s, _)| s == start) {
            out.pop();
        }
        if out.last().is_some_and(|&(_, pv)| pv == v) {
            return;
        }
        out.push((start, v));
    }

    emit(&mut out, 0, value(&ids));
    for it in items.iter() {
        while let Some(top) = stack.last().copied()
            && top.end < it.start
        {
            stack.pop();
            ids.pop();
            emit(&mut out, top.end + 1, value(&ids));
        }
        stack.push(*it);
        ids.push(it.idx);
        emit(&mut out, it.start, value(&ids));
    }
    while let Some(top) = stack.pop() {
        ids.pop();
        if top.end < max {
            emit(&mut out, top.end + 1, value(&ids));
        }
    }
    out
}

/// The value of `addr` in a sweep's output (for tests and the in-memory backend).
pub fn value_at(intervals: &[(u128, u32)], addr: u128) -> u32 {
    let i = intervals.partition_point(|&(s, _)| s <= addr);
    if i == 0 { 0 } else { intervals[i - 1].1 }
}

#[cfg(test)]
mod tests {
    use mssp_common::Net;

    use super::*;

    fn items(nets: &[Net]) -> Vec<Item> {
        nets.iter()
            .enumerate()
            .map(|(idx, n)| Item {
                start: n.start(),
                end: n.end(),
                idx,
            })
            .collect()
    }

    fn lpm(nets: &[Net], addr: u128) -> u32 {
        nets.iter()
            .enumerate()
            .filter(|(_, n)| n.contains(n.v6, addr))
            .max_by_key(|(_, n)| n.len)
            .map_or(0, |(i, _)| i as u32 + 1)
    }

    #[test]
    fn nested_and_adjacent() {
        let nets = [
            Net::new(false, 0x0a00_0000, 8),
            Net::new(false, 0x0a01_0000, 16),
            Net::new(false, 0x0a01_0100, 24),
            Net::new(false, 0x0a02_0000, 16),
            Net::new(false, 0xffff_ffff, 32),
            Net::new(false, 0, 32),
        ];
        let mut it = items(&nets);
        let out = sweep(&mut it, u32::MAX as u128, |s| {
            s.last().map_or(0, |i| *i as u32 + 1)
        });
        for addr in [
            0u128,
            1,
            0x09ff_ffff,
            0x0a00_0000,
            0x0a00_ffff,
            0x0a01_0000,
            0x0a01_00ff,
            0x0a01_0100,
            0x0a01_01ff,
            0x0a01_0200,
            0x0a01_ffff,
            0x0a02_0000,
            0x0a02_ffff,
            0x0a03_0000,
            0x0aff_ffff,
            0x0b00_0000,
            0xffff_fffe,
            0xffff_ffff,
        ] {
            assert_eq!(value_at(&out, addr), lpm(&nets, addr), "addr {addr:#x}");
        }
        // Merged: no two neighbours share a value.
        assert!(out.windows(2).all(|w| w[0].1 != w[1].1));
    }

    #[test]
    fn whole_space() {
        let nets = [Net::new(true, 0, 0)];
        let out = sweep(&mut items(&nets), u128::MAX, |s| s.len() as u32);
        assert_eq!(out, vec![(0, 1)]);
        let out = sweep(&mut [], u128::MAX, |s| s.len() as u32);
        assert_eq!(out, vec![(0, 0)]);
    }
}
