//! The one decoder of the `(slot, verdict, reason)` counter layout: which indices a slot's
//! counters have, and what a bulk read of them means. Stats, metrics and both map backends
//! go through here.

use mssp_common::{
    Reason, Verdict,
    abi::{Counter, counter_index},
    reason::{NREASONS, NVERDICTS},
};

/// Counters per slot: one per (verdict, reason) pair, reserved reasons included.
pub const PER_SLOT: u32 = NVERDICTS * NREASONS;

/// The indices of one slot's counters in maps made for `slots` slots, in the order
/// [`SlotCounters`] holds them (`verdict * NREASONS + reason`).
pub fn slot_indices(slot: u32, slots: u32) -> impl Iterator<Item = u32> {
    (0..PER_SLOT).map(move |i| counter_index(slot, i / NREASONS, i % NREASONS, slots))
}

/// A slot's counters, indexed `verdict * NREASONS + reason`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotCounters(pub Vec<Counter>);

/// One counter's meaning. `None` for codes this build does not know (a newer program's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterKey {
    pub verdict: Option<Verdict>,
    pub reason: Option<Reason>,
}

impl CounterKey {
    pub fn verdict_name(&self) -> &'static str {
        self.verdict.map_or("unknown", |v| v.name())
    }

    pub fn reason_name(&self) -> &'static str {
        self.reason.map_or("unknown", |r| r.name())
    }
}

impl SlotCounters {
    /// The counters that counted something.
    pub fn nonzero(&self) -> impl Iterator<Item = (CounterKey, Counter)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, c)| c.packets != 0)
            .map(|(i, c)| {
                let (v, r) = (i as u32 / NREASONS, i as u32 % NREASONS);
                (
                    CounterKey {
                        verdict: Verdict::from_u32(v),
                        reason: Reason::from_u32(r),
                    },
                    *c,
                )
            })
    }

    pub fn get(&self, verdict: Verdict, reason: Reason) -> Counter {
        self.0
            .get((verdict as u32 * NREASONS + reason as u32) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// (passed, dropped) packets.
    pub fn totals(&self) -> (u64, u64) {
        self.nonzero()
            .fold((0, 0), |(p, d), (k, c)| match k.verdict {
                Some(Verdict::Drop) => (p, d + c.packets),
                _ => (p + c.packets, d),
            })
    }
}

/// Every `(slot, verdict, reason)` counter, from one bulk read.
pub struct CounterTable {
    slots: u32,
    all: Vec<Counter>,
}

impl CounterTable {
    /// `all` as read from the start of the counter map, for maps of `slots` slots.
    pub fn new(slots: u32, all: Vec<Counter>) -> CounterTable {
        CounterTable { slots, all }
    }

    pub fn of(&self, slot: u32) -> SlotCounters {
        SlotCounters(
            slot_indices(slot, self.slots)
                .map(|idx| self.all.get(idx as usize).copied().unwrap_or_default())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_layout() {
        let slots = 4;
        let mut all = vec![Counter::default(); (PER_SLOT * slots) as usize];
        let i = counter_index(2, Verdict::Drop as u32, Reason::CustomerBlock as u32, slots);
        all[i as usize] = Counter {
            packets: 3,
            bytes: 300,
        };
        let t = CounterTable::new(slots, all);
        let s = t.of(2);
        assert_eq!(s.get(Verdict::Drop, Reason::CustomerBlock).packets, 3);
        let nz: Vec<_> = s.nonzero().collect();
        assert_eq!(nz.len(), 1);
        assert_eq!(nz[0].0.reason_name(), "customer_block");
        assert_eq!(s.totals(), (0, 3));
        assert!(t.of(1).nonzero().next().is_none());
    }
}
