//! What the inspector reports, every second, in `filter-stats.json` beside the table: its
//! sockets, counters per customer and action, the most blocked names and the latest
//! decisions. The agent serves them (`mssp status`, `mssp filter stats`, metrics).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Packets read from the sockets.
    pub inspected: u64,
    /// Packets re-injected towards their destination.
    pub allowed: u64,
    /// Blocked names, by what was done: DNS answered NXDOMAIN, answered with the sinkhole,
    /// DNS dropped, TLS/HTTP reset.
    pub nxdomain: u64,
    pub sinkhole: u64,
    pub dropped: u64,
    pub reset: u64,
    /// Segments of a blocked flow that were already on their way: dropped.
    pub dropped_late: u64,
    /// Flows whose name was not in their first segment: held until it came.
    pub held: u64,
    /// Split requests whose rest did not come within hold_ms: let through (fail-open).
    pub hold_timeout: u64,
    /// Packets that were not DNS, TLS or HTTP as expected: let through.
    pub unparsed: u64,
}

impl Counts {
    pub fn blocked(&self) -> u64 {
        self.nxdomain + self.sinkhole + self.dropped + self.reset
    }

    pub fn add(&mut self, o: &Counts) {
        self.inspected += o.inspected;
        self.allowed += o.allowed;
        self.nxdomain += o.nxdomain;
        self.sinkhole += o.sinkhole;
        self.dropped += o.dropped;
        self.reset += o.reset;
        self.dropped_late += o.dropped_late;
        self.held += o.held;
        self.hold_timeout += o.hold_timeout;
        self.unparsed += o.unparsed;
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SocketReport {
    pub interface: String,
    pub queue: u32,
    /// "copy" or "zerocopy".
    pub mode: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CustomerCounts {
    pub id: u32,
    pub name: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// One decision, as `mssp monitor` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub unix_ms: u64,
    pub customer_id: Option<u32>,
    pub source: String,
    /// "dns", "tls" or "http".
    pub kind: String,
    pub name: String,
    /// "allow" or the action taken ("nxdomain", "sinkhole", "drop", "reset").
    pub verdict: String,
    /// The listed name that blocked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub pid: u32,
    pub started_unix: u64,
    pub updated_unix_ms: u64,
    /// The table generation in force.
    pub generation: u64,
    pub inject_device: String,
    pub sockets: Vec<SocketReport>,
    pub totals: Counts,
    pub customers: Vec<CustomerCounts>,
    /// (name, blocks), most first.
    pub top_blocked: Vec<(String, u64)>,
    /// Newest last.
    pub recent: Vec<Event>,
}

/// Names tracked for the top list (the rest are only counted).
const MAX_TRACKED: usize = 10_000;
const TOP: usize = 20;
const RECENT: usize = 256;

#[derive(Default)]
pub struct Stats {
    pub totals: Counts,
    pub customers: HashMap<Option<u32>, Counts>,
    blocked_names: HashMap<String, u64>,
    recent: VecDeque<Event>,
}

impl Stats {
    pub fn customer(&mut self, id: Option<u32>) -> &mut Counts {
        self.customers.entry(id).or_default()
    }

    pub fn event(&mut self, e: Event) {
        if e.verdict != "allow" {
            let n = self.blocked_names.len();
            if let Some(c) = self.blocked_names.get_mut(&e.name) {
                *c += 1;
            } else if n < MAX_TRACKED {
                self.blocked_names.insert(e.name.clone(), 1);
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(e);
    }

    pub fn report(
        &self,
        names: impl Fn(u32) -> Option<String>,
    ) -> (Counts, Vec<CustomerCounts>, Vec<(String, u64)>, Vec<Event>) {
        let mut totals = Counts::default();
        let mut customers: Vec<CustomerCounts> = self
            .customers
            .iter()
            .map(|(id, c)| {
                totals.add(c);
                CustomerCounts {
                    id: id.unwrap_or(0),
                    name: id.and_then(&names),
                    counts: *c,
                }
            })
            .collect();
        customers.sort_by_key(|c| c.id);
        let mut top: Vec<(String, u64)> = self
            .blocked_names
            .iter()
            .map(|(n, c)| (n.clone(), *c))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP);
        (
            totals,
            customers,
            top,
            self.recent.iter().cloned().collect(),
        )
    }
}

/// Milliseconds since the Unix epoch (what reports and events carry).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
