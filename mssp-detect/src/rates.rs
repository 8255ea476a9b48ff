//! Rates per destination from cumulative meter readings, over one-second windows.
//!
//! The agent reads every meter each tick (a quarter second); a [`History`] keeps the last
//! few seconds of readings of one destination, and a window's rate is the difference of
//! the readings at its ends over the time between them.

use std::collections::VecDeque;

use mssp_common::abi::{Meter, meter_class};
use mssp_core::policy::detection::Metric;

/// Packets and bits per second of each meter class.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub pps: [f64; meter_class::N],
    pub bps: [f64; meter_class::N],
}

impl Rates {
    pub fn value(&self, m: Metric) -> f64 {
        if m.is_bits() {
            self.bps[m.class()]
        } else {
            self.pps[m.class()]
        }
    }
}

/// Readings of one destination: (monotonic seconds, cumulative meter).
#[derive(Clone, Debug, Default)]
pub struct History {
    snaps: VecDeque<(f64, Meter)>,
}

/// `b - a`, a counter that went down (the meter was evicted and made again) counting from 0.
fn delta(a: u64, b: u64) -> u64 {
    if b >= a { b - a } else { b }
}

fn rates_between(a: &(f64, Meter), b: &(f64, Meter)) -> Option<Rates> {
    let dt = b.0 - a.0;
    if dt <= 0.0 {
        return None;
    }
    let mut r = Rates::default();
    for c in 0..meter_class::N {
        r.pps[c] = delta(a.1.packets[c], b.1.packets[c]) as f64 / dt;
        r.bps[c] = 8.0 * delta(a.1.bytes[c], b.1.bytes[c]) as f64 / dt;
    }
    Some(r)
}

impl History {
    /// Adds a reading; readings older than `keep` seconds before it are dropped (one older
    /// than that stays, as the start of the oldest window).
    pub fn push(&mut self, t: f64, m: Meter, keep: f64) {
        self.snaps.push_back((t, m));
        while self.snaps.len() > 2 && self.snaps[1].0 <= t - keep {
            self.snaps.pop_front();
        }
    }

    pub fn latest(&self) -> Option<f64> {
        self.snaps.back().map(|s| s.0)
    }

    /// The reading at or just before `t` (within `slack` after it, for tick jitter).
    fn at(&self, t: f64, slack: f64) -> Option<&(f64, Meter)> {
        self.snaps.iter().rev().find(|s| s.0 <= t + slack)
    }

    /// The rates over the one-second window that ends `back` seconds before the latest
    /// reading. `None` until the history reaches back that far.
    pub fn window(&self, back: f64) -> Option<Rates> {
        let last = self.latest()?;
        let end = self.at(last - back, 0.05)?;
        let start = self.at(end.0 - 1.0, 0.05)?;
        if end.0 - start.0 < 0.5 {
            return None;
        }
        rates_between(start, end)
    }

    /// Rates over the last `secs` seconds (at least one reading apart).
    pub fn recent(&self, secs: f64) -> Option<Rates> {
        let last = self.snaps.back()?;
        let start = self
            .at(last.0 - secs, 0.05)
            .or_else(|| self.snaps.front())?;
        rates_between(start, last)
    }

    /// When the metric rose over `threshold`. Walking back from the latest reading, the
    /// one-second windows ending at each reading stay over the threshold back to an earliest
    /// one; the onset is the start of the first reading interval inside that window which is
    /// itself over the threshold. One-second windows, not single intervals, so a bursty
    /// flood (one burst a second, quiet quarter seconds between) still has one onset: its
    /// first burst.
    pub fn onset(&self, m: Metric, threshold: f64) -> Option<f64> {
        let n = self.snaps.len();
        let mut earliest = None;
        for j in (1..n).rev() {
            let end = &self.snaps[j];
            let Some(start) = self.at(end.0 - 1.0, 0.05) else {
                break;
            };
            match rates_between(start, end) {
                Some(r) if r.value(m) > threshold => earliest = Some((start.0, j)),
                _ => break,
            }
        }
        let (from, j) = earliest?;
        (1..=j)
            .filter(|&i| self.snaps[i - 1].0 >= from)
            .find(|&i| {
                rates_between(&self.snaps[i - 1], &self.snaps[i])
                    .is_some_and(|r| r.value(m) > threshold)
            })
            .map(|i| self.snaps[i - 1].0)
            .or(Some(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(packets: u64) -> Meter {
        let mut m = Meter::default();
        m.packets[meter_class::ALL] = packets;
        m.bytes[meter_class::ALL] = packets * 100;
        m
    }

    #[test]
    fn windows_are_one_second_each_back_from_the_latest_reading() {
        let mut h = History::default();
        // 1000 pps for 2 s, then 5000 pps for 2 s, read every quarter second.
        let mut total = 0;
        for i in 0..=16 {
            let t = i as f64 * 0.25;
            h.push(t, meter(total), 10.0);
            total += if t < 2.0 { 250 } else { 1250 };
        }
        let w0 = h.window(0.0).unwrap();
        let w1 = h.window(1.0).unwrap();
        let w2 = h.window(2.0).unwrap();
        assert_eq!(w0.value(Metric::Pps), 5000.0);
        assert_eq!(w1.value(Metric::Pps), 5000.0);
        assert_eq!(w2.value(Metric::Pps), 1000.0);
        assert_eq!(w0.value(Metric::Bps), 5000.0 * 800.0);
        assert!(h.window(4.5).is_none(), "no reading reaches that far back");
        assert_eq!(h.onset(Metric::Pps, 2000.0), Some(2.0));
    }

    /// Regression: trafgen's `--rate` (like many real floods) sends in bursts, here once a
    /// second; the onset was the start of the latest burst, not of the flood.
    #[test]
    fn the_onset_of_a_bursty_flood_is_its_first_burst() {
        let mut h = History::default();
        let mut total = 0;
        for i in 0..=24 {
            let t = i as f64 * 0.25;
            h.push(t, meter(total), 10.0);
            total += 25; // 100 pps
            if t >= 2.0 && i % 4 == 0 {
                total += 30_000; // a burst, once a second
            }
        }
        assert_eq!(h.onset(Metric::Pps, 5000.0), Some(2.0));
    }

    #[test]
    fn an_evicted_meter_counts_again_from_zero() {
        let mut h = History::default();
        h.push(0.0, meter(10_000), 10.0);
        h.push(1.0, meter(300), 10.0);
        assert_eq!(h.window(0.0).unwrap().value(Metric::Pps), 300.0);
    }
}
