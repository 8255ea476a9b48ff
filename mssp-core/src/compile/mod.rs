//! Prefix lists -> search trees ready for the arenas: longest-prefix match decided once per
//! interval (`intervals`), laid out as static B-trees (`tree`), with expiry chains for
//! intervals whose most specific entry expires.

pub mod intervals;
pub mod rules;
pub mod tree;

use std::collections::HashMap;

use mssp_common::{
    Net,
    abi::{CHAIN_MAX_LINKS, ChainLink, Node4, Node6, SourceAction, value},
};

use intervals::{Item, sweep};
use tree::Built;

use crate::policy::cidr::format_net;

/// A source entry as the compiler needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceItem {
    pub net: Net,
    pub action: SourceAction,
    /// `CLOCK_BOOTTIME` nanoseconds from which the entry is no longer in force.
    pub expires_boot_ns: Option<u64>,
    /// Hit-counter index (never 0).
    pub id: u32,
}

/// A compiled prefix list, both families, with region-relative indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub t4: Built<Node4>,
    pub t6: Built<Node6>,
    /// Chain links; `next` is a relative index plus one. Tree values that are chains hold
    /// relative link indices until [`Unit::relocate`].
    pub chain: Vec<ChainLink>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{prefix} is nested under {depth} expiring entries; at most {max} expiring entries may cover one address"
    )]
    ChainTooDeep {
        prefix: String,
        depth: usize,
        max: u32,
    },
}

impl Unit {
    pub fn empty() -> Unit {
        Unit {
            t4: Built::empty(),
            t6: Built::empty(),
            chain: Vec::new(),
        }
    }

    /// Places the unit: trees at `base4`/`base6`, chain links at `chain_base`.
    pub fn relocate(&mut self, base4: u32, base6: u32, chain_base: u32) {
        self.t4.relocate(base4);
        self.t6.relocate(base6);
        if self.chain.is_empty() {
            return;
        }
        let fix = |v: u32| {
            if value::is_chain(v) {
                value::chain(value::action(v), value::id(v) + chain_base)
            } else {
                v
            }
        };
        self.t4.map_leaf_values(fix);
        self.t6.map_leaf_values(fix);
        for l in &mut self.chain {
            if l.next != 0 {
                l.next += chain_base;
            }
        }
    }
}

/// Digest of what a record was compiled from, stored in the record: a record whose digest
/// matches is not rewritten, so this must not collide in practice (foldhash's quality
/// variant, 64 bit, fixed seed: the same input gives the same digest in one build; a build
/// with another foldhash merely recompiles everything once). It takes words, not bytes: a
/// million source entries are ~4 M words, and byte-wise FNV-1a took ~90 ms of a 1M push.
pub struct Digest(foldhash::quality::FoldHasher<'static>);

impl Digest {
    pub fn new() -> Digest {
        use std::hash::BuildHasher;
        Digest(foldhash::quality::FixedState::with_seed(0x6d73_7370_6469_6773).build_hasher())
    }

    pub fn u64(&mut self, v: u64) {
        std::hash::Hasher::write_u64(&mut self.0, v);
    }

    pub fn u128(&mut self, v: u128) {
        std::hash::Hasher::write_u128(&mut self.0, v);
    }

    /// The bytes of a map value type (`#[repr(C)]`, no padding: every byte is a field's).
    pub fn pod<T: aya::Pod>(&mut self, v: &T) {
        // SAFETY: `Pod` types are plain old data without padding (asserted in mssp-common).
        let bytes =
            unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) };
        std::hash::Hasher::write(&mut self.0, bytes);
        self.u64(bytes.len() as u64);
    }

    pub fn finish(&self) -> u64 {
        std::hash::Hasher::finish(&self.0)
    }
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

fn items_of(nets: impl Iterator<Item = Net>) -> Vec<Item> {
    nets.enumerate()
        .map(|(idx, n)| Item {
            start: n.start(),
            end: n.end(),
            idx,
        })
        .collect()
}

/// A prefix set where the most specific prefix's value wins (infrastructure, customer
/// prefixes). No prefix may appear twice.
pub fn compile_values(entries: &[(Net, u32)]) -> Unit {
    let mut unit = Unit::empty();
    for v6 in [false, true] {
        let fam: Vec<&(Net, u32)> = entries.iter().filter(|(n, _)| n.v6 == v6).collect();
        let mut items = items_of(fam.iter().map(|(n, _)| *n));
        let iv = sweep(&mut items, Net::max_addr(v6), |stack| {
            stack.last().map_or(0, |&i| fam[i].1)
        });
        if v6 {
            unit.t6 = Built::build(&iv);
        } else {
            unit.t4 = Built::build(&iv);
        }
    }
    unit
}

/// A source list (global or one customer's). No prefix may appear twice.
pub fn compile_sources(entries: &[SourceItem]) -> Result<Unit, CompileError> {
    let mut unit = Unit::empty();
    for v6 in [false, true] {
        let fam: Vec<&SourceItem> = entries.iter().filter(|s| s.net.v6 == v6).collect();
        let mut items = items_of(fam.iter().map(|s| s.net));
        // The chain of an interval depends only on its innermost entry (prefixes nest), so
        // chains are built once per innermost entry.
        let mut chains: HashMap<usize, u32> = HashMap::new();
        let mut error = None;
        let chain = &mut unit.chain;
        let iv = sweep(&mut items, Net::max_addr(v6), |stack| {
            let Some(&top) = stack.last() else { return 0 };
            let s = fam[top];
            if s.expires_boot_ns.is_none() {
                return value::entry(s.action as u32, s.id);
            }
            if let Some(&v) = chains.get(&top) {
                return v;
            }
            let first = chain.len() as u32;
            let mut depth = 0;
            for &k in stack.iter().rev() {
                let e = fam[k];
                depth += 1;
                let next = chain.len() as u32 + 2;
                chain.push(ChainLink {
                    expires_boot_ns: e.expires_boot_ns.unwrap_or(u64::MAX),
                    value: value::entry(e.action as u32, e.id),
                    next,
                });
                if e.expires_boot_ns.is_none() {
                    break;
                }
            }
            if let Some(last) = chain.last_mut() {
                last.next = 0;
            }
            if depth > CHAIN_MAX_LINKS as usize && error.is_none() {
                error = Some(CompileError::ChainTooDeep {
                    prefix: format_net(&s.net),
                    depth,
                    max: CHAIN_MAX_LINKS,
                });
            }
            let v = value::chain(s.action as u32, first);
            chains.insert(top, v);
            v
        });
        if let Some(e) = error {
            return Err(e);
        }
        if v6 {
            unit.t6 = Built::build(&iv);
        } else {
            unit.t4 = Built::build(&iv);
        }
    }
    Ok(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net4(a: u32, len: u8) -> Net {
        Net::new(false, a as u128, len)
    }

    /// Resolves a leaf value through the unit's (unrelocated) chains at time `now`.
    fn resolve(unit: &Unit, v: u32, now: u64) -> u32 {
        if !value::is_chain(v) {
            return v;
        }
        let mut i = value::id(v) as usize;
        loop {
            let l = unit.chain[i];
            if now < l.expires_boot_ns {
                return l.value;
            }
            if l.next == 0 {
                return 0;
            }
            i = l.next as usize - 1;
        }
    }

    #[test]
    fn most_specific_wins_and_expiry_falls_back() {
        let outer = SourceItem {
            net: net4(0xc612_4200, 24),
            action: SourceAction::Drop,
            expires_boot_ns: None,
            id: 1,
        };
        let inner = SourceItem {
            net: net4(0xc612_4280, 25),
            action: SourceAction::Allow,
            expires_boot_ns: Some(1000),
            id: 2,
        };
        let host = SourceItem {
            net: net4(0xc612_42c1, 32),
            action: SourceAction::Monitor,
            expires_boot_ns: Some(500),
            id: 3,
        };
        let u = compile_sources(&[outer, inner, host]).unwrap();
        let at = |a: u32, now| resolve(&u, u.t4.lookup(a as u128), now);
        assert_eq!(at(0xc612_4201, 0), value::entry(1, 1));
        assert_eq!(at(0xc612_4281, 0), value::entry(2, 2));
        assert_eq!(at(0xc612_4281, 1000), value::entry(1, 1));
        assert_eq!(at(0xc612_42c1, 0), value::entry(3, 3));
        assert_eq!(at(0xc612_42c1, 500), value::entry(2, 2));
        assert_eq!(at(0xc612_42c1, 2000), value::entry(1, 1));
        assert_eq!(at(0xc612_4300, 0), 0);
    }

    #[test]
    fn chain_values_relocate() {
        let e = SourceItem {
            net: net4(0xc612_4200, 24),
            action: SourceAction::Drop,
            expires_boot_ns: Some(10),
            id: 9,
        };
        let mut u = compile_sources(&[e]).unwrap();
        assert_eq!(u.chain.len(), 1);
        u.relocate(100, 0, 40);
        // Leaf values sit in the single leaf (root) of the tree.
        let v = u.t4.nodes[0].w[1];
        assert!(value::is_chain(v));
        assert_eq!(value::id(v), 40);
    }

    #[test]
    fn too_deep() {
        let items: Vec<SourceItem> = (0..10)
            .map(|i| SourceItem {
                net: net4(0xc612_0000, 16 + i),
                action: SourceAction::Drop,
                expires_boot_ns: Some(5),
                id: i as u32 + 1,
            })
            .collect();
        let e = compile_sources(&items).unwrap_err();
        assert!(
            e.to_string().contains("198.18.0.0/24 is nested under 9"),
            "{e}"
        );
    }
}
