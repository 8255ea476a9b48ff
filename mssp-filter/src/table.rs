//! What the inspector enforces: each customer's filtering (central and local layers
//! merged by the agent) and the global list, with the customers' prefixes to find a
//! packet's customer by its source. The agent writes it as `filtering.json` in its state
//! directory; the inspector reloads it when it changes.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use mssp_core::policy::{
    cidr::parse_cidr,
    filtering::{FilterAction, Filtering},
};
use serde::{Deserialize, Serialize};

use crate::names::NameSet;

/// The file form.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TableDoc {
    /// Changes whenever the agent writes a different table.
    pub generation: u64,
    pub global: Option<Filtering>,
    pub customers: Vec<CustomerDoc>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CustomerDoc {
    pub id: u32,
    pub name: Option<String>,
    pub prefixes: Vec<String>,
    pub filtering: Option<Filtering>,
    /// Names the NOC added on this edge (`mssp filter add`), part of `filtering` already.
    #[serde(default)]
    pub local_names: Vec<String>,
}

/// Which list decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    Customer,
    Global,
}

/// The decision for one name from one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The customer whose prefix holds the source, if any.
    pub customer_id: Option<u32>,
    pub customer_name: Option<String>,
    /// `None`: allowed.
    pub blocked: Option<Block>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub list: List,
    /// The listed name that matched (the name itself or one it is under).
    pub rule: String,
    /// `local` when the NOC added the name on this edge, else `central`.
    pub layer: String,
    pub action: FilterAction,
    pub sinkhole_v4: Option<std::net::Ipv4Addr>,
    pub sinkhole_v6: Option<std::net::Ipv6Addr>,
}

struct CustomerFilter {
    name: Option<String>,
    filtering: Filtering,
    names: NameSet,
    local: BTreeSet<String>,
}

#[derive(Default)]
pub struct FilterTable {
    pub generation: u64,
    global: Option<(Filtering, NameSet)>,
    customers: HashMap<u32, CustomerFilter>,
    /// (v6, prefix length, network) -> customer id; lengths present, longest first.
    prefixes: HashMap<(bool, u8, u128), u32>,
    lengths: Vec<(bool, u8)>,
}

fn addr_bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl FilterTable {
    pub fn from_doc(doc: &TableDoc) -> Result<FilterTable, String> {
        let mut t = FilterTable {
            generation: doc.generation,
            global: doc.global.as_ref().map(|g| {
                let set = NameSet::new(g.block_domains.iter().map(String::as_str));
                (g.clone(), set)
            }),
            ..FilterTable::default()
        };
        let mut lengths = BTreeSet::new();
        for c in &doc.customers {
            for p in &c.prefixes {
                let n = parse_cidr(p, true).map_err(|e| format!("customer {}: {p}: {e}", c.id))?;
                t.prefixes.insert((n.v6, n.len, n.addr), c.id);
                lengths.insert((n.v6, n.len));
            }
            let filtering = c.filtering.clone().unwrap_or_default();
            t.customers.insert(
                c.id,
                CustomerFilter {
                    name: c.name.clone(),
                    names: NameSet::new(filtering.block_domains.iter().map(String::as_str)),
                    filtering,
                    local: c.local_names.iter().cloned().collect(),
                },
            );
        }
        t.lengths = lengths.into_iter().rev().collect();
        Ok(t)
    }

    /// The customer whose prefix holds `src` (longest match).
    pub fn customer_of(&self, src: IpAddr) -> Option<u32> {
        let (v6, a) = addr_bits(src);
        self.lengths
            .iter()
            .filter(|(lv6, _)| *lv6 == v6)
            .find_map(|&(_, len)| {
                let net = mssp_common::Net::new(v6, a, len);
                self.prefixes.get(&(v6, len, net.addr)).copied()
            })
    }

    pub fn customer_name(&self, id: u32) -> Option<&str> {
        self.customers.get(&id).and_then(|c| c.name.as_deref())
    }

    /// Whether anything at all is blocked (else the inspector need not run).
    pub fn inspects(&self) -> bool {
        self.global.as_ref().is_some_and(|(_, s)| !s.is_empty())
            || self.customers.values().any(|c| !c.names.is_empty())
    }

    /// The customer's list first, then the global one.
    pub fn decide_for(&self, customer: Option<u32>, name: &str) -> Decision {
        let c = customer.and_then(|id| self.customers.get(&id));
        let block = |list: List, f: &Filtering, rule: &str, local: bool| Block {
            list,
            rule: rule.to_string(),
            layer: if local { "local" } else { "central" }.into(),
            action: f.action,
            sinkhole_v4: f.sinkhole_v4,
            sinkhole_v6: f.sinkhole_v6,
        };
        let blocked = c
            .and_then(|c| {
                c.names
                    .matching(name)
                    .map(|r| block(List::Customer, &c.filtering, r, c.local.contains(r)))
            })
            .or_else(|| {
                self.global
                    .as_ref()
                    .and_then(|(f, s)| s.matching(name).map(|r| block(List::Global, f, r, false)))
            });
        Decision {
            customer_id: customer,
            customer_name: c.and_then(|c| c.name.clone()),
            blocked,
        }
    }

    pub fn decide(&self, src: IpAddr, name: &str) -> Decision {
        self.decide_for(self.customer_of(src), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtering(names: &[&str]) -> Filtering {
        Filtering {
            block_domains: names.iter().map(|s| s.to_string()).collect(),
            ..Filtering::default()
        }
    }

    #[test]
    fn the_customer_is_found_by_source_and_its_list_then_the_global_list_decides() {
        let doc = TableDoc {
            generation: 1,
            global: Some(filtering(&["malware.test"])),
            customers: vec![
                CustomerDoc {
                    id: 7,
                    name: Some("acme".into()),
                    prefixes: vec!["198.19.7.0/24".into(), "198.19.7.128/25".into()],
                    filtering: Some(filtering(&["bad.test"])),
                    local_names: vec!["bad.test".into()],
                },
                CustomerDoc {
                    id: 8,
                    name: None,
                    prefixes: vec!["198.19.7.200/32".into(), "2001:db8:8::/48".into()],
                    filtering: None,
                    local_names: vec![],
                },
            ],
        };
        let t = FilterTable::from_doc(&doc).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(t.customer_of(ip("198.19.7.10")), Some(7));
        assert_eq!(t.customer_of(ip("198.19.7.200")), Some(8));
        assert_eq!(t.customer_of(ip("2001:db8:8::1")), Some(8));
        assert_eq!(t.customer_of(ip("198.19.8.1")), None);
        let d = t.decide(ip("198.19.7.10"), "www.bad.test");
        let b = d.blocked.unwrap();
        assert_eq!(
            (b.list, b.rule.as_str(), b.layer.as_str()),
            (List::Customer, "bad.test", "local")
        );
        assert_eq!(d.customer_name.as_deref(), Some("acme"));
        assert!(t.decide(ip("198.19.7.200"), "bad.test").blocked.is_none());
        assert_eq!(
            t.decide(ip("198.19.7.200"), "x.malware.test")
                .blocked
                .unwrap()
                .list,
            List::Global
        );
        assert!(
            t.decide(ip("198.19.9.9"), "x.malware.test")
                .blocked
                .is_some()
        );
    }
}
