//! The sizes of the program's maps, as loaded or configured, and the CPU count the striped
//! counter maps are sized by. Both the loader (which creates the maps) and the publisher
//! (which fills them) read these.

use mssp_common::abi::{
    MAX_BUCKETS, MAX_CHAIN, MAX_ENTRY_IDS, MAX_NODES4, MAX_NODES6, MAX_RECORDS, MAX_RULE_CIDRS,
    MAX_RULES, MAX_SLOTS,
};

/// Sizes of the maps, as loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub slots: u32,
    pub records: u32,
    pub nodes4: u32,
    pub nodes6: u32,
    pub chain: u32,
    pub entry_ids: u32,
    pub rules: u32,
    pub rule_cidrs: u32,
    /// Rule counters and token buckets (one index space).
    pub buckets: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            slots: MAX_SLOTS,
            records: MAX_RECORDS,
            nodes4: MAX_NODES4,
            nodes6: MAX_NODES6,
            chain: MAX_CHAIN,
            entry_ids: MAX_ENTRY_IDS,
            rules: MAX_RULES,
            rule_cidrs: MAX_RULE_CIDRS,
            buckets: MAX_BUCKETS,
        }
    }
}

/// Possible CPUs: the striped counter maps hold one block per CPU.
pub fn ncpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |n| n as u32)
}
