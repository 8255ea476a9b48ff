//! Generated policies and traffic for the benchmarks and tests: customers with an IPv4 /30
//! and an IPv6 /64 each, source entries in a feed-like mix of lengths, flows drawn from them
//! (uniform or Zipf), and the same policy as an nftables ruleset.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mssp_common::{Net, abi::SourceAction};
use mssp_core::policy::{
    PolicyDoc,
    doc::{CustomerDoc, SourceDoc},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

/// One source entry of a generated policy.
#[derive(Clone, Copy)]
pub(crate) struct Src {
    pub(crate) customer: u32,
    pub(crate) v6: bool,
    pub(crate) addr: u128,
    pub(crate) len: u8,
}

/// A generated policy: customers (id = index) with an IPv4 /30 and an IPv6 /64 each, and
/// their source entries (half IPv4, half IPv6), lengths in a feed-like mix.
pub struct Gen {
    pub(crate) customers: u32,
    pub(crate) sources: Vec<Src>,
}

pub(crate) fn cust4(i: u32) -> u128 {
    (0xc613_0000u32 + 4 * i) as u128
}

pub(crate) fn cust6(i: u32) -> u128 {
    (0x2001_0db8_c000u128 << 80) | ((i as u128) << 64)
}

pub fn generate(customers: u32, per_customer: u32, seed: u64) -> Gen {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sources = Vec::with_capacity((customers * per_customer) as usize);
    for c in 0..customers {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < per_customer as usize {
            let v6 = seen.len() % 2 == 1;
            let (addr, len) = if v6 {
                let len = [128u8, 128, 64, 64, 56, 48][rng.random_range(0..6)];
                // 2001:db8:0::/33 for sources; customers live in 2001:db8:c000::/34.
                let a = (0x2001_0db8u128 << 96) | (rng.random::<u128>() >> 33);
                (a & !Net::host_mask(true, len), len)
            } else {
                let len =
                    [32u8, 32, 32, 32, 32, 32, 24, 24, 24, 28, 28, 20][rng.random_range(0..12)];
                let a = 0xc612_0000u32 | rng.random_range(0..0x1_0000u32);
                (
                    (a & !(u32::MAX.checked_shr(len as u32).unwrap_or(0))) as u128,
                    len,
                )
            };
            if seen.insert((v6, addr, len)) {
                sources.push(Src {
                    customer: c,
                    v6,
                    addr,
                    len,
                });
            }
        }
    }
    Gen { customers, sources }
}

fn fmt_net(v6: bool, addr: u128, len: u8) -> String {
    if v6 {
        format!("{}/{len}", Ipv6Addr::from(addr))
    } else {
        format!("{}/{len}", Ipv4Addr::from(addr as u32))
    }
}

impl Gen {
    /// Source entries in the policy.
    pub fn entries(&self) -> usize {
        self.sources.len()
    }

    pub fn doc(&self) -> PolicyDoc {
        let mut customers: Vec<CustomerDoc> = (0..self.customers)
            .map(|i| CustomerDoc {
                id: i + 1,
                prefixes: vec![fmt_net(false, cust4(i), 30), fmt_net(true, cust6(i), 64)],
                ..CustomerDoc::default()
            })
            .collect();
        for s in &self.sources {
            customers[s.customer as usize].sources.push(SourceDoc {
                prefix: fmt_net(s.v6, s.addr, s.len),
                action: SourceAction::Drop,
                expires: None,
                comment: None,
            });
        }
        PolicyDoc {
            version: 1,
            customers,
            ..PolicyDoc::default()
        }
    }

    /// Flows whose sources are drawn from the policy's entries of one family (uniformly, or
    /// Zipf-distributed over a random ranking of the entries), each to its customer.
    pub fn flows(&self, v6: bool, zipf: bool, n: usize, seed: u64) -> Vec<(IpAddr, IpAddr)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut fam: Vec<&Src> = self.sources.iter().filter(|s| s.v6 == v6).collect();
        fam.shuffle(&mut rng);
        // Zipf(s = 1.0) by inverse transform over the harmonic weights.
        let weights: Vec<f64> = if zipf {
            let mut acc = 0.0;
            (0..fam.len())
                .map(|k| {
                    acc += 1.0 / (k as f64 + 1.0);
                    acc
                })
                .collect()
        } else {
            Vec::new()
        };
        (0..n)
            .map(|_| {
                let s = if zipf {
                    let x = rng.random::<f64>() * weights[weights.len() - 1];
                    fam[weights.partition_point(|w| *w < x).min(fam.len() - 1)]
                } else {
                    fam[rng.random_range(0..fam.len())]
                };
                // (Not `u128::MAX >> len`: a /128 wraps to a shift of 0 in a release build.)
                let host = Net::host_mask(s.v6, s.len);
                let src = s.addr | (rng.random::<u128>() & host);
                let (dst, dhost) = if v6 {
                    (cust6(s.customer), u64::MAX as u128)
                } else {
                    (cust4(s.customer), 3)
                };
                let dst = dst | (rng.random::<u128>() & dhost);
                if v6 {
                    (
                        IpAddr::V6(Ipv6Addr::from(src)),
                        IpAddr::V6(Ipv6Addr::from(dst)),
                    )
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::from(src as u32)),
                        IpAddr::V4(Ipv4Addr::from(dst as u32)),
                    )
                }
            })
            .collect()
    }

    pub fn nft_ruleset(&self, dev: &str) -> String {
        let mut by: Vec<(Vec<String>, Vec<String>)> =
            vec![(Vec::new(), Vec::new()); self.customers as usize];
        for s in &self.sources {
            let e = &mut by[s.customer as usize];
            if s.v6 {
                e.1.push(fmt_net(true, s.addr, s.len));
            } else {
                e.0.push(fmt_net(false, s.addr, s.len));
            }
        }
        let mut out = String::from("table netdev mssp_bench {\n");
        for (i, (v4, v6)) in by.iter().enumerate() {
            for (fam, list) in [("ipv4_addr", v4), ("ipv6_addr", v6)] {
                let _ = writeln!(
                    out,
                    "  set s{}_{i} {{\n    type {fam}\n    flags interval\n    auto-merge\n    elements = {{ {} }}\n  }}",
                    &fam[..4],
                    list.join(",")
                );
            }
            let _ = writeln!(
                out,
                "  chain c{i} {{\n    ip saddr @sipv4_{i} drop\n    ip6 saddr @sipv6_{i} drop\n  }}"
            );
        }
        let vm4: Vec<String> = (0..self.customers)
            .map(|i| format!("{} : jump c{i}", fmt_net(false, cust4(i), 30)))
            .collect();
        let vm6: Vec<String> = (0..self.customers)
            .map(|i| format!("{} : jump c{i}", fmt_net(true, cust6(i), 64)))
            .collect();
        let _ = writeln!(
            out,
            "  map cust4 {{\n    type ipv4_addr : verdict\n    flags interval\n    elements = {{ {} }}\n  }}",
            vm4.join(",")
        );
        let _ = writeln!(
            out,
            "  map cust6 {{\n    type ipv6_addr : verdict\n    flags interval\n    elements = {{ {} }}\n  }}",
            vm6.join(",")
        );
        let _ = writeln!(
            out,
            "  chain ingress {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n    counter\n    ip daddr vmap @cust4\n    ip6 daddr vmap @cust6\n  }}\n}}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flow's source lies inside the entry it was drawn from, and every flow's
    /// destination inside that entry's customer: the variants drop all they are offered.
    /// Regression: a /128 entry's host mask was `u128::MAX >> 128`, which wraps to a shift
    /// of 0 in a release build, so /128 entries were all `::/128` and their flows had random
    /// sources that no entry covers (20% of mssp_1k's IPv6 traffic passed to the stack).
    #[test]
    fn flows_come_from_the_entries_and_go_to_their_customers() {
        let g = generate(50, 10, 7);
        for s in &g.sources {
            assert!(
                !(s.v6 && s.len == 128 && s.addr == 0),
                "a /128 entry collapsed to ::/128"
            );
        }
        for v6 in [false, true] {
            for zipf in [false, true] {
                for (src, dst) in g.flows(v6, zipf, 2000, 3) {
                    let (src, dst) = match (src, dst) {
                        (IpAddr::V4(s), IpAddr::V4(d)) => {
                            (u32::from(s) as u128, u32::from(d) as u128)
                        }
                        (IpAddr::V6(s), IpAddr::V6(d)) => (u128::from(s), u128::from(d)),
                        _ => panic!("mixed families"),
                    };
                    let covers =
                        |addr: u128, len: u8, a: u128| Net::new(v6, addr, len).contains(v6, a);
                    let from = g
                        .sources
                        .iter()
                        .find(|s| s.v6 == v6 && covers(s.addr, s.len, src))
                        .unwrap_or_else(|| panic!("source {src:#x} (v6 {v6}) is in no entry"));
                    let (cust, len) = if v6 {
                        (cust6(from.customer), 64)
                    } else {
                        (cust4(from.customer), 30)
                    };
                    assert!(
                        g.sources.iter().any(|s| s.v6 == v6
                            && covers(s.addr, s.len, src)
                            && covers(
                                if v6 {
                                    cust6(s.customer)
                                } else {
                                    cust4(s.customer)
                                },
                                len,
                                dst
                            )),
                        "destination {dst:#x} is not the customer {} of source {src:#x} ({cust:#x})",
                        from.customer
                    );
                }
            }
        }
    }
}
