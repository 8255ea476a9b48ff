//! Verdicts and reasons. The reason codes are an append-only list: a code is never renumbered
//! or reused, because counters indexed by it survive program upgrades and the names are
//! metric labels that dashboards depend on.

/// What happened to a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
}

pub const NVERDICTS: u32 = 2;

impl Verdict {
    pub const ALL: [Verdict; NVERDICTS as usize] = [Verdict::Pass, Verdict::Drop];

    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        }
    }

    pub const fn from_u32(v: u32) -> Option<Verdict> {
        match v {
            0 => Some(Verdict::Pass),
            1 => Some(Verdict::Drop),
            _ => None,
        }
    }
}

/// Why a packet got its verdict. Append only (see the module comment).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No entry or rule decided: the packet passes.
    Default = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passes unfiltered.
    NonIp = 1,
    /// Wrong IP version for its ethertype, IHL < 5, a header cut short, TCP data offset < 5.
    Malformed = 2,
    /// More VLAN tags or IPv6 extension headers than the parser walks.
    UnsupportedEncap = 3,
    /// Source or destination inside an infrastructure prefix: always passes.
    Infrastructure = 4,
    /// The customer's own source list says allow.
    Allowlisted = 5,
    /// The ISP-wide source list says drop.
    GlobalBlock = 6,
    /// The customer's source list says drop.
    CustomerBlock = 7,
    /// A customer rule with a terminal action (drop or pass) matched.
    Rule = 8,
    /// Over a rule's rate limit.
    RateLimited = 9,
    /// Over the customer's clean-pipe limit.
    CustomerLimit = 10,
    /// The program could not read its own maps (never expected); the packet passes so a bug
    /// in mssp never becomes an outage.
    InternalError = 11,
}

/// Room in the counter layout for reasons added later without changing the ABI.
pub const NREASONS: u32 = 16;

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::Default,
        Reason::NonIp,
        Reason::Malformed,
        Reason::UnsupportedEncap,
        Reason::Infrastructure,
        Reason::Allowlisted,
        Reason::GlobalBlock,
        Reason::CustomerBlock,
        Reason::Rule,
        Reason::RateLimited,
        Reason::CustomerLimit,
        Reason::InternalError,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::Default => "default",
            Reason::NonIp => "non_ip",
            Reason::Malformed => "malformed",
            Reason::UnsupportedEncap => "unsupported_encap",
            Reason::Infrastructure => "infrastructure",
            Reason::Allowlisted => "allowlisted",
            Reason::GlobalBlock => "global_block",
            Reason::CustomerBlock => "customer_block",
            Reason::Rule => "rule",
            Reason::RateLimited => "rate_limited",
            Reason::CustomerLimit => "customer_limit",
            Reason::InternalError => "internal_error",
        }
    }

    pub const fn from_u32(v: u32) -> Option<Reason> {
        if (v as usize) < Reason::ALL.len() {
            Some(Reason::ALL[v as usize])
        } else {
            None
        }
    }
}

const _: () = assert!(Reason::ALL.len() as u32 <= NREASONS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_their_positions() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_u32(Reason::ALL.len() as u32), None);
    }
}
