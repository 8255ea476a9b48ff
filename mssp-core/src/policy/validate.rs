//! Document -> [`Policy`]: every refusal class of the contract, each error naming the field
//! path and the bad value. All problems are collected, so one round trip shows them all.

use std::collections::{HashMap, HashSet};

use mssp_common::{Net, abi::CHAIN_MAX_LINKS};

use crate::capacity::Capacities;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    Customer, FieldError, Policy, PolicyDoc, PolicyError, SourceEntry,
    cidr::{format_net, parse_cidr},
    doc::SourceDoc,
};

/// What the maps hold, so that a document too large is refused before anything is touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Customers (slots minus the root).
    pub customers: u32,
    /// Source entries, global and per customer together.
    pub source_entries: u32,
}

/// Entry ids kept for the layers above the central one (local, fleet, auto).
pub const NON_CENTRAL_RESERVE: u32 = 65_536;

impl Capacity {
    /// What a central document may hold in maps of these sizes — the rule the publisher
    /// lives by: id 0 means "no entry"; room is kept for the other layers' entries; and a
    /// push that replaces every entry needs the new ids while the old ones are still in force,
    /// so a document gets at most half of the rest.
    pub fn of(caps: &Capacities) -> Capacity {
        Capacity {
            customers: caps.slots - 1,
            source_entries: caps.entry_ids.saturating_sub(1 + NON_CENTRAL_RESERVE) / 2,
        }
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::of(&Capacities::default())
    }
}

/// The first entry of `entries` nested under more expiring entries than the data path's
/// expiry chains hold (the compiler refuses the same: at most [`CHAIN_MAX_LINKS`] links,
/// an entry that never expires ending a chain).
fn too_deep(entries: &[SourceEntry]) -> Option<(usize, usize)> {
    if !entries.iter().any(|e| e.expires.is_some()) {
        return None;
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by_key(|&i| {
        let n = &entries[i].net;
        (n.v6, n.start(), std::cmp::Reverse(n.end()))
    });
    // The covering entries of the current one, outermost first.
    let mut stack: Vec<usize> = Vec::new();
    for &i in &order {
        let n = entries[i].net;
        while let Some(&top) = stack.last() {
            let t = entries[top].net;
            if t.v6 == n.v6 && t.end() >= n.end() && t.start() <= n.start() {
                break;
            }
            stack.pop();
        }
        stack.push(i);
        if entries[i].expires.is_some() {
            let mut depth = 0;
            for &k in stack.iter().rev() {
                depth += 1;
                if entries[k].expires.is_none() {
                    break;
                }
            }
            if depth > CHAIN_MAX_LINKS as usize {
                return Some((i, depth));
            }
        }
    }
    None
}

/// Parses and validates a JSON policy document.
pub fn parse_policy(bytes: &[u8], cap: &Capacity) -> Result<Policy, PolicyError> {
    // Tracking the path costs a third of parsing a million entries: a document that parses
    // does without it, one that does not is parsed again to say where.
    if let Ok(doc) = serde_json::from_slice::<PolicyDoc>(bytes) {
        return validate_owned(doc, cap);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let doc: PolicyDoc = match serde_path_to_error::deserialize(&mut de) {
        Ok(doc) => doc,
        Err(e) => return Err(json_error(e)),
    };
    if let Err(e) = de.end() {
        return Err(PolicyError::Syntax(e.to_string()));
    }
    validate_owned(doc, cap)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> PolicyError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Eof => PolicyError::Truncated(inner.to_string()),
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            PolicyError::Syntax(inner.to_string())
        }
        serde_json::error::Category::Data => PolicyError::Invalid(vec![FieldError {
            path: if path == "." { String::new() } else { path },
            message: inner.to_string(),
        }]),
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn sources(list: &[SourceDoc], path: &str, errors: &mut Errors) -> Vec<SourceEntry> {
    let mut out = Vec::with_capacity(list.len());
    let mut seen: HashMap<Net, usize, foldhash::fast::RandomState> = HashMap::default();
    seen.reserve(list.len());
    for (i, s) in list.iter().enumerate() {
        // Built only on the error paths: a million entries need no million strings.
        let here = || format!("{path}[{i}]");
        let net = match parse_cidr(&s.prefix, false) {
            Ok(n) => n,
            Err(m) => {
                errors.add(format!("{}.prefix", here()), m);
                continue;
            }
        };
        if let Some(first) = seen.insert(net, i) {
            errors.add(
                format!("{}.prefix", here()),
                format!(
                    "{} is listed twice (also at {path}[{first}]); keep one entry per prefix",
                    format_net(&net)
                ),
            );
            continue;
        }
        let expires = match &s.expires {
            None => None,
            Some(t) => {
                match OffsetDateTime::parse(t, &Rfc3339) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errors.add(
                        format!("{}.expires", here()),
                        format!("{t:?} is not an RFC 3339 time ({e}); write e.g. 2026-12-01T00:00:00Z"),
                    );
                        continue;
                    }
                }
            }
        };
        out.push(SourceEntry {
            net,
            action: s.action,
            expires,
            comment: s.comment.clone(),
        });
    }
    out
}

/// Refuses entries nested under more expiring entries than an expiry chain holds.
fn nesting(entries: &[SourceEntry], path: &str, errors: &mut Errors) {
    if let Some((i, depth)) = too_deep(entries) {
        errors.add(
            format!("{path}[{i}].prefix"),
            format!(
                "{} is nested under {} expiring entries; at most {CHAIN_MAX_LINKS} expiring entries may cover one address",
                format_net(&entries[i].net),
                depth - 1
            ),
        );
    }
}

/// Validates a parsed document against the contract and the map capacity.
pub fn validate(doc: &PolicyDoc, cap: &Capacity) -> Result<Policy, PolicyError> {
    validate_doc(std::borrow::Cow::Borrowed(doc), cap)
}

/// [`validate`], keeping `doc` in the policy without copying it (a million entries' strings).
pub fn validate_owned(doc: PolicyDoc, cap: &Capacity) -> Result<Policy, PolicyError> {
    validate_doc(std::borrow::Cow::Owned(doc), cap)
}

fn validate_doc(
    doc_in: std::borrow::Cow<'_, PolicyDoc>,
    cap: &Capacity,
) -> Result<Policy, PolicyError> {
    let doc: &PolicyDoc = &doc_in;
    let mut errors = Errors(Vec::new());

    let mut infrastructure = Vec::new();
    for (i, p) in doc.infrastructure.iter().enumerate() {
        match parse_cidr(p, false) {
            Ok(n) if !infrastructure.contains(&n) => infrastructure.push(n),
            Ok(_) => {}
            Err(m) => errors.add(format!("infrastructure[{i}]"), m),
        }
    }

    let global = sources(&doc.global.sources, "global.sources", &mut errors);
    nesting(&global, "global.sources", &mut errors);

    let mut customers = Vec::with_capacity(doc.customers.len());
    let mut ids: HashMap<u32, usize> = HashMap::new();
    let mut owners: HashMap<Net, (u32, String)> = HashMap::new();
    for (ci, c) in doc.customers.iter().enumerate() {
        let here = format!("customers[{ci}]");
        if let Some(first) = ids.insert(c.id, ci) {
            errors.add(
                format!("{here}.id"),
                format!(
                    "customer id {} is used twice (also customers[{first}]); ids must be unique",
                    c.id
                ),
            );
        }
        let mut prefixes = Vec::new();
        let mut mine = HashSet::new();
        for (pi, p) in c.prefixes.iter().enumerate() {
            let path = format!("{here}.prefixes[{pi}]");
            let net = match parse_cidr(p, false) {
                Ok(n) => n,
                Err(m) => {
                    errors.add(path, m);
                    continue;
                }
            };
            if !mine.insert(net) {
                continue;
            }
            match owners.get(&net) {
                Some((other, other_path)) if *other != c.id => errors.add(
                    path.clone(),
                    format!(
                        "{} is already claimed by customer {other} ({other_path}); a prefix belongs to one customer",
                        format_net(&net)
                    ),
                ),
                _ => {
                    owners.insert(net, (c.id, path.clone()));
                }
            }
            prefixes.push(net);
        }
        let srcs = sources(&c.sources, &format!("{here}.sources"), &mut errors);
        nesting(&srcs, &format!("{here}.sources"), &mut errors);
        let rules =
            super::rules::rules(&c.rules, &format!("{here}.rules"), &prefixes, &mut errors.0);
        let limits = c
            .limits
            .as_ref()
            .and_then(|l| super::rules::limits(l, &format!("{here}.limits"), &mut errors.0));
        let detection = c.detection.as_ref().and_then(|d| {
            super::detection::detection(d, &format!("{here}.detection"), &mut errors.0)
        });
        let filtering = c.filtering.as_ref().and_then(|f| {
            super::filtering::filtering(f, &format!("{here}.filtering"), &mut errors.0)
        });
        customers.push(Customer {
            id: c.id,
            name: c.name.clone(),
            prefixes,
            sources: srcs,
            rules,
            limits,
            detection,
            filtering,
        });
    }

    if customers.len() as u64 > cap.customers as u64 {
        errors.add(
            "customers",
            format!(
                "{} customers, but the maps hold {}; raise the capacity in the agent config",
                customers.len(),
                cap.customers
            ),
        );
    }
    let entries = global.len() as u64
        + customers
            .iter()
            .map(|c| c.sources.len() as u64)
            .sum::<u64>();
    if entries > cap.source_entries as u64 {
        errors.add(
            "",
            format!(
                "{entries} source entries, but the maps hold {}; raise the capacity in the agent config",
                cap.source_entries
            ),
        );
    }

    let detection = doc
        .detection
        .as_ref()
        .and_then(|d| super::detection::detection(d, "detection", &mut errors.0));
    let global_filtering = doc
        .global
        .filtering
        .as_ref()
        .and_then(|f| super::filtering::filtering(f, "global.filtering", &mut errors.0));

    if !errors.0.is_empty() {
        return Err(PolicyError::Invalid(errors.0));
    }
    Ok(Policy {
        version: doc.version,
        infrastructure,
        global,
        by_id: Policy::index(&customers),
        customers,
        detection,
        global_filtering,
        doc: doc_in.into_owned(),
        doc_slim: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(json: &str) -> PolicyError {
        parse_policy(json.as_bytes(), &Capacity::default()).expect_err("should be refused")
    }

    const GOOD: &str = r#"{
      "version": 12,
      "infrastructure": ["198.18.255.0/24", "2001:db8:ffff::/48"],
      "global": { "sources": [ {"prefix": "198.18.200.0/22", "action": "drop", "comment": "feed X"} ] },
      "customers": [
        { "id": 7, "name": "acme",
          "prefixes": ["198.19.7.0/24", "2001:db8:7::/48"],
          "sources": [
            {"prefix": "198.18.66.0/24",   "action": "drop", "expires": "2026-12-01T00:00:00Z", "comment": "ticket 4411"},
            {"prefix": "198.18.66.128/25", "action": "allow"}
          ],
          "rules": [] }
      ]
    }"#;

    #[test]
    fn the_brief_example_is_accepted() {
        let p = parse_policy(GOOD.as_bytes(), &Capacity::default()).unwrap();
        assert_eq!(p.version, 12);
        assert_eq!(p.infrastructure.len(), 2);
        assert_eq!(p.customers[0].sources.len(), 2);
        assert!(p.customers[0].sources[0].expires.is_some());
    }

    #[test]
    fn unknown_field_names_its_path() {
        let e = refuse(r#"{"version":1,"customers":[{"id":1,"prefixes":[],"colour":"red"}]}"#);
        let s = e.to_string();
        assert!(s.starts_with("customers[0]"), "{s}");
        assert!(s.contains("unknown field `colour`"), "{s}");
    }

    #[test]
    fn unknown_action_names_its_path_and_value() {
        let e = refuse(
            r#"{"version":1,"global":{"sources":[{"prefix":"198.18.0.0/24","action":"block"}]}}"#,
        );
        let s = e.to_string();
        assert!(s.contains("global.sources[0].action"), "{s}");
        assert!(s.contains("unknown variant `block`"), "{s}");
    }

    #[test]
    fn host_bits_say_what_was_meant() {
        let e = refuse(r#"{"version":1,"customers":[{"id":1,"prefixes":["198.19.7.1/24"]}]}"#);
        assert_eq!(
            e.to_string(),
            "customers[0].prefixes[0]: \"198.19.7.1/24\" has host bits set; did you mean 198.19.7.0/24?"
        );
    }

    #[test]
    fn unparsable_cidr() {
        let e = refuse(
            r#"{"version":1,"customers":[{"id":1,"sources":[{"prefix":"198.18.66.0/33","action":"drop"}]}]}"#,
        );
        assert!(
            e.to_string()
                .contains("customers[0].sources[0].prefix: \"198.18.66.0/33\""),
            "{e}"
        );
    }

    #[test]
    fn duplicate_ids_and_shared_prefixes() {
        let e = refuse(
            r#"{"version":1,"customers":[
                {"id":1,"prefixes":["198.19.1.0/24"]},
                {"id":1,"prefixes":["198.19.2.0/24"]},
                {"id":3,"prefixes":["198.19.1.0/24"]}]}"#,
        );
        let errs = e.field_errors();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].path, "customers[1].id");
        assert!(errs[0].message.contains("customer id 1 is used twice"));
        assert_eq!(errs[1].path, "customers[2].prefixes[0]");
        assert!(
            errs[1]
                .message
                .contains("198.19.1.0/24 is already claimed by customer 1")
        );
    }

    #[test]
    fn truncated_and_not_json() {
        assert!(matches!(
            refuse(&GOOD[..GOOD.len() / 2]),
            PolicyError::Truncated(_)
        ));
        assert!(matches!(refuse("version: 1"), PolicyError::Syntax(_)));
        assert!(matches!(refuse(""), PolicyError::Truncated(_)));
        assert!(matches!(
            refuse(r#"{"version":1} trailing"#),
            PolicyError::Syntax(_)
        ));
    }

    /// Regression: input the contract says to refuse was accepted (arrays for objects, null
    /// for absent, duplicate keys, empty lists, sloppy CIDRs), and some errors lacked the
    /// leaf's path.
    #[test]
    fn what_serde_let_through_is_refused_at_its_leaf() {
        let c = |rules: &str| {
            format!(
                r#"{{"version":1,"customers":[{{"id":7,"prefixes":["198.19.7.0/24"],"rules":[{rules}]}}]}}"#
            )
        };
        for (doc, path, needle) in [
            (
                c(r#"{"id":1,"match":[],"action":"drop"}"#),
                "customers[0].rules[0].match",
                "invalid type: sequence",
            ),
            (
                r#"{"version":1,"customers":[[7,null,["198.19.7.0/24"]]]}"#.to_string(),
                "customers[0]",
                "invalid type: sequence",
            ),
            (
                c(r#"{"id":1,"match":{"protocol":null},"action":"drop"}"#),
                "customers[0].rules[0].match.protocol",
                "null",
            ),
            (
                r#"{"version":1,"customers":[{"id":7,"name":null}]}"#.to_string(),
                "customers[0].name",
                "null",
            ),
            (
                c(
                    r#"{"id":1,"match":{},"action":{"rate_limit":{"pps":1},"rate_limit":{"pps":2}}}"#,
                ),
                "customers[0].rules[0].action",
                "given twice",
            ),
            (
                c(r#"{"id":1,"match":{"vlan":[]},"action":"drop"}"#),
                "customers[0].rules[0].match.vlan",
                "empty list",
            ),
            (
                c(r#"{"id":1,"match":{"fragment":[]},"action":"drop"}"#),
                "customers[0].rules[0].match.fragment",
                "empty list",
            ),
            (
                c(r#"{"id":1,"match":{"dst_ports":["+53"]},"action":"drop"}"#),
                "customers[0].rules[0].match.dst_ports[0]",
                "not a port",
            ),
            (
                r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/+24"]}]}"#.to_string(),
                "customers[0].prefixes[0]",
                "prefix length",
            ),
            (
                r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0/024"]}]}"#.to_string(),
                "customers[0].prefixes[0]",
                "prefix length",
            ),
            (
                r#"{"version":1,"customers":[{"id":7,"prefixes":["198.19.7.0 /24"]}]}"#.to_string(),
                "customers[0].prefixes[0]",
                "spaces",
            ),
            (
                c(r#"{"id":1,"match":{},"action":{"rate_limit":{"pps":10,"burst":"x"}}}"#),
                "customers[0].rules[0].action.rate_limit.burst",
                "invalid type",
            ),
            (
                r#"{"version":1,"global":{"sources":[{"prefix":"198.18.0.0/24","action":1}]}}"#
                    .to_string(),
                "global.sources[0].action",
                "invalid type: integer `1`",
            ),
        ] {
            let e = refuse(&doc);
            let errs = e.field_errors();
            assert!(
                errs.iter()
                    .any(|f| f.path == path && f.message.contains(needle)),
                "{doc}: wanted {path}: …{needle}…; got {errs:?}"
            );
        }
    }

    /// Regression: validation accepted documents the publisher then refused.
    #[test]
    fn validation_applies_the_publishers_capacity_rules() {
        // Ten nested expiring /16../25: the compiler's chains hold eight links.
        let mut srcs = Vec::new();
        for len in 16..26 {
            srcs.push(format!(
                r#"{{"prefix":"198.18.0.0/{len}","action":"drop","expires":"2099-01-01T00:00:00Z"}}"#
            ));
        }
        let doc = format!(
            r#"{{"version":1,"global":{{"sources":[{}]}}}}"#,
            srcs.join(",")
        );
        let e = refuse(&doc);
        assert!(
            e.to_string()
                .contains("expiring entries may cover one address"),
            "{e}"
        );
        // And the compiler agrees on the same document.
        let p = parse_policy(
            format!(
                r#"{{"version":1,"global":{{"sources":[{}]}}}}"#,
                srcs[..7].join(",")
            )
            .as_bytes(),
            &Capacity::default(),
        )
        .expect("seven nested expiring entries fit");
        assert_eq!(p.global.len(), 7);
        // Ids: a document gets half of what is left after the other layers' reserve.
        let caps = Capacities {
            entry_ids: 1 + NON_CENTRAL_RESERVE + 20,
            ..Capacities::default()
        };
        assert_eq!(Capacity::of(&caps).source_entries, 10);
    }

    #[test]
    fn capacity() {
        let cap = Capacity {
            customers: 1,
            source_entries: 1,
        };
        let e = parse_policy(
            br#"{"version":1,"global":{"sources":[{"prefix":"198.18.0.0/24","action":"drop"},{"prefix":"198.18.1.0/24","action":"drop"}]},
                "customers":[{"id":1},{"id":2}]}"#,
            &cap,
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("2 customers, but the maps hold 1"), "{s}");
        assert!(s.contains("2 source entries, but the maps hold 1"), "{s}");
    }
}

#[cfg(test)]
mod detection_tests {
    use super::*;

    #[test]
    fn detection_is_validated_where_it_stands_and_reserved_rule_ids_are_refused() {
        let doc = r#"{"version":1,"detection":{"mode":"monitor","thresholds":{"pps":1000}},
          "customers":[{"id":7,"prefixes":["198.19.7.0/24"],
            "detection":{"mode":"mitigate","thresholds":{"udp_pps":-1}},
            "rules":[{"id":4026531841,"match":{"protocol":"udp"},"action":"drop"}]}]}"#;
        let e = parse_policy(doc.as_bytes(), &Capacity::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("customers[0].detection.thresholds.udp_pps"),
            "{text}"
        );
        let doc = doc.replace("-1", "5000");
        let e = parse_policy(doc.as_bytes(), &Capacity::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("customers[0].rules[0].id: rule id 4026531841 is reserved"),
            "{text}"
        );
        let doc = doc.replace("4026531841", "1");
        let p = parse_policy(doc.as_bytes(), &Capacity::default()).unwrap();
        assert_eq!(
            p.detection_of(7)
                .unwrap()
                .threshold(super::super::detection::Metric::UdpPps),
            Some(5000)
        );
        assert_eq!(
            p.detection.as_ref().unwrap().mode,
            super::super::detection::DetectMode::Monitor
        );
        assert!(crate::dataplane::Desired::from_policy(&p).customers[0].meter);
    }
}
