//! Customer rules (FlowSpec-grade matches, drop/pass/monitor/rate-limit) and clean-pipe
//! limits: validation of the document's shapes into [`RuleSpec`] and [`Limits`], each refusal
//! naming the field path and the bad value.

use mssp_common::{
    Net, abi::MAX_RULES_PER_CUSTOMER, abi::RULE_MAX_CIDRS, abi::RULE_MAX_PORT_RANGES,
    abi::RULE_MAX_VLANS,
};
use serde_json::Value;

use super::{
    FieldError,
    cidr::{format_net, parse_cidr},
    rules_doc::{LimitsDoc, MatchDoc, RangeDoc, RateLimitDoc, RuleDoc},
};

/// Fragment positions a rule can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FragMatch {
    None,
    First,
    Later,
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateSpec {
    pub pps: Option<u64>,
    pub bps: Option<u64>,
    pub burst: Option<u64>,
    pub burst_bytes: Option<u64>,
    pub per_source: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Drop,
    Pass,
    Monitor,
    RateLimit(RateSpec),
}

impl RuleAction {
    pub fn name(&self) -> &'static str {
        match self {
            RuleAction::Drop => "drop",
            RuleAction::Pass => "pass",
            RuleAction::Monitor => "monitor",
            RuleAction::RateLimit(_) => "rate_limit",
        }
    }
}

/// A validated rule. `None` fields are absent (match anything).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleSpec {
    pub id: u32,
    pub protocol: Option<Vec<u8>>,
    pub sources: Option<Vec<Net>>,
    pub destinations: Option<Vec<Net>>,
    pub src_ports: Option<Vec<(u16, u16)>>,
    pub dst_ports: Option<Vec<(u16, u16)>>,
    /// (must be set, must be clear)
    pub tcp_flags: Option<(u8, u8)>,
    pub icmp_type: Option<Vec<u8>>,
    pub icmp_code: Option<Vec<u8>>,
    pub length: Option<(u32, u32)>,
    pub ttl: Option<(u8, u8)>,
    pub dscp: Option<Vec<u8>>,
    pub fragment: Option<Vec<FragMatch>>,
    pub vlan: Option<Vec<u16>>,
    pub action: RuleAction,
    pub comment: Option<String>,
}

impl RuleSpec {
    /// The reference classifier's view of the rule.
    pub fn to_reference(&self) -> mssp_common::reference::RefRule {
        use mssp_common::reference::{RefRule, RefRuleAction};
        RefRule {
            id: self.id,
            protocol: self.protocol.clone(),
            sources: self.sources.clone(),
            destinations: self.destinations.clone(),
            src_ports: self.src_ports.clone(),
            dst_ports: self.dst_ports.clone(),
            tcp_flags: self.tcp_flags,
            icmp_type: self.icmp_type.clone(),
            icmp_code: self.icmp_code.clone(),
            length: self.length,
            ttl: self.ttl,
            dscp: self.dscp.clone(),
            fragment: self.fragment.as_ref().map(|f| {
                f.iter()
                    .flat_map(|x| match x {
                        FragMatch::None => vec![0u8],
                        FragMatch::First => vec![1],
                        FragMatch::Later => vec![2],
                        FragMatch::Any => vec![1, 2],
                    })
                    .collect()
            }),
            vlan: self.vlan.clone(),
            action: Some(match self.action {
                RuleAction::Drop => RefRuleAction::Drop,
                RuleAction::Pass => RefRuleAction::Pass,
                RuleAction::Monitor => RefRuleAction::Monitor,
                RuleAction::RateLimit(_) => RefRuleAction::RateLimit,
            }),
        }
    }
}

/// A customer's clean-pipe cap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    pub pps: Option<u64>,
    pub bps: Option<u64>,
}

const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("ipencap", 4),
    ("tcp", 6),
    ("egp", 8),
    ("udp", 17),
    ("ipv6", 41),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("eigrp", 88),
    ("ospf", 89),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
];

pub const TCP_FLAGS: &[(&str, u8)] = &[
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

/// A protocol by name (`udp`, `tcp`, `icmp`, …) or number.
pub fn protocol_number(name: &str) -> Option<u8> {
    let lower = name.to_ascii_lowercase();
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, p)| *p)
        .or_else(|| decimal(name).filter(|n| *n <= 255).map(|n| n as u8))
}

struct Ctx<'a> {
    errors: &'a mut Vec<FieldError>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// A field that takes one value or a list of values.
fn one_or_many(v: &Value) -> Vec<(Option<usize>, &Value)> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| (Some(i), x))
            .collect(),
        other => vec![(None, other)],
    }
}

fn at(path: &str, i: Option<usize>) -> String {
    match i {
        Some(i) => format!("{path}[{i}]"),
        None => path.to_string(),
    }
}

/// A plain decimal number: digits only, no sign, no spaces, no leading zeros.
fn decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn number(v: &Value, max: u64, what: &str) -> Result<u64, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => decimal(s),
        _ => None,
    }
    .ok_or_else(|| format!("{v} is not a {what} (a whole number from 0 to {max})"))?;
    if n > max {
        return Err(format!("{v} is over {max}, the largest {what}"));
    }
    Ok(n)
}

fn numbers(c: &mut Ctx, v: &Value, path: &str, max: u64, what: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let items = one_or_many(v);
    if items.is_empty() {
        c.err(
            path,
            format!(
                "an empty list matches nothing; give at least one {what} or leave the field out"
            ),
        );
        return None;
    }
    let mut ok = true;
    for (i, x) in items {
        match number(x, max, what) {
            Ok(n) => out.push(n as u8),
            Err(m) => {
                c.err(&at(path, i), m);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn protocols(c: &mut Ctx, v: &Value, path: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, x) in one_or_many(v) {
        let p = at(path, i);
        match x {
            Value::String(s) if decimal(s).is_none() => {
                let name = s.to_ascii_lowercase();
                match PROTOCOLS.iter().find(|(n, _)| *n == name) {
                    Some((_, n)) => out.push(*n),
                    None => {
                        c.err(
                            &p,
                            format!(
                                "unknown protocol {s:?}; use a number (0-255) or one of {}",
                                PROTOCOLS
                                    .iter()
                                    .map(|(n, _)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                        ok = false;
                    }
                }
            }
            other => match number(other, 255, "protocol number") {
                Ok(n) => out.push(n as u8),
                Err(m) => {
                    c.err(&p, m);
                    ok = false;
                }
            },
        }
    }
    if out.is_empty() && ok {
        c.err(
            path,
            "an empty list matches nothing; name at least one protocol or leave the field out",
        );
        return None;
    }
    ok.then_some(out)
}

fn port(s: &str) -> Result<u16, String> {
    let n: u64 = decimal(s).ok_or_else(|| format!("{s:?} is not a port number"))?;
    if n > 65535 {
        return Err(format!("port {n} is over 65535"));
    }
    Ok(n as u16)
}

fn ports(c: &mut Ctx, v: &Value, path: &str) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    let mut ok = true;
    let items = one_or_many(v);
    if items.is_empty() {
        c.err(
            path,
            "an empty list matches nothing; give ports like \"53\" or \"1024-65535\"",
        );
        return None;
    }
    for (i, x) in items {
        let p = at(path, i);
        let text = match x {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                c.err(
                    &p,
                    format!("{other} is not a port or range; write \"N\" or \"N-M\""),
                );
                ok = false;
                continue;
            }
        };
        let r = match text.split_once('-') {
            None => port(&text).map(|n| (n, n)),
            Some((a, b)) => match (port(a), port(b)) {
                (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
                (Ok(a), Ok(b)) => Err(format!(
                    "range {text:?} is inverted ({a} > {b}); write \"{b}-{a}\""
                )),
                (Err(e), _) | (_, Err(e)) => Err(format!("range {text:?}: {e}")),
            },
        };
        match r {
            Ok(r) => out.push(r),
            Err(m) => {
                c.err(&p, m);
                ok = false;
            }
        }
    }
    if out.len() > RULE_MAX_PORT_RANGES {
        c.err(
            path,
            format!(
                "{} port ranges; a rule holds at most {RULE_MAX_PORT_RANGES} (split the rule)",
                out.len()
            ),
        );
        return None;
    }
    ok.then_some(out)
}

fn range(c: &mut Ctx, r: &RangeDoc, path: &str, max: u64, what: &str) -> Option<(u64, u64)> {
    let lo = r.min.unwrap_or(0);
    let hi = r.max.unwrap_or(max);
    if r.min.is_none() && r.max.is_none() {
        c.err(path, format!("give min, max or both for the {what}"));
        return None;
    }
    if hi > max {
        c.err(
            &format!("{path}.max"),
            format!("{hi} is over {max}, the largest {what}"),
        );
        return None;
    }
    if lo > hi {
        c.err(
            path,
            format!("min {lo} is above max {hi}: the range is empty"),
        );
        return None;
    }
    Some((lo, hi))
}

fn flags(c: &mut Ctx, names: &[String], path: &str) -> Option<u8> {
    let mut bits = 0u8;
    let mut ok = true;
    for (i, n) in names.iter().enumerate() {
        match TCP_FLAGS.iter().find(|(f, _)| *f == n.to_ascii_lowercase()) {
            Some((_, b)) => bits |= b,
            None => {
                c.err(
                    &format!("{path}[{i}]"),
                    format!("unknown TCP flag {n:?}; use fin, syn, rst, psh, ack, urg, ece or cwr"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(bits)
}

fn cidrs(c: &mut Ctx, list: &[String], path: &str) -> Option<Vec<Net>> {
    if list.is_empty() {
        c.err(
            path,
            "an empty list matches nothing; give at least one CIDR or leave the field out",
        );
        return None;
    }
    if list.len() > RULE_MAX_CIDRS as usize {
        c.err(
            path,
            format!(
                "{} CIDRs; a rule holds at most {RULE_MAX_CIDRS}",
                list.len()
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, s) in list.iter().enumerate() {
        match parse_cidr(s, false) {
            Ok(n) => out.push(n),
            Err(m) => {
                c.err(&format!("{path}[{i}]"), m);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn rate(c: &mut Ctx, v: &RateLimitDoc, path: &str) -> Option<RateSpec> {
    let mut ok = true;
    for (name, val) in [
        ("pps", v.pps),
        ("bps", v.bps),
        ("burst", v.burst),
        ("burst_bytes", v.burst_bytes),
    ] {
        if val == Some(0) {
            c.err(
                &format!("{path}.{name}"),
                format!("a {name} of 0 is refused; to drop everything use \"action\": \"drop\""),
            );
            ok = false;
        }
    }
    if v.pps.is_none() && v.bps.is_none() {
        c.err(path, "give pps, bps or both");
        ok = false;
    }
    if v.burst.is_some() && v.pps.is_none() {
        c.err(&format!("{path}.burst"), "burst (packets) goes with pps");
        ok = false;
    }
    if v.burst_bytes.is_some() && v.bps.is_none() {
        c.err(&format!("{path}.burst_bytes"), "burst_bytes goes with bps");
        ok = false;
    }
    if v.pps.is_some_and(|p| p > 1_000_000_000) {
        c.err(
            &format!("{path}.pps"),
            "over 10^9 packets per second is beyond what the bucket resolves",
        );
        ok = false;
    }
    ok.then_some(RateSpec {
        pps: v.pps,
        bps: v.bps,
        burst: v.burst,
        burst_bytes: v.burst_bytes,
        per_source: v.per_source,
    })
}

fn action(c: &mut Ctx, v: &Value, path: &str) -> Option<RuleAction> {
    match v {
        Value::String(s) => match s.as_str() {
            "drop" => Some(RuleAction::Drop),
            "pass" => Some(RuleAction::Pass),
            "monitor" => Some(RuleAction::Monitor),
            other => {
                c.err(path, format!("unknown action {other:?}; use \"drop\", \"pass\", \"monitor\" or {{\"rate_limit\": {{...}}}}"));
                None
            }
        },
        Value::Object(m) if m.len() == 1 && m.contains_key("rate_limit") => {
            match serde_path_to_error::deserialize::<_, RateLimitDoc>(&m["rate_limit"]) {
                Ok(r) => rate(c, &r, &format!("{path}.rate_limit")).map(RuleAction::RateLimit),
                Err(e) => {
                    // The leaf's path: `….rate_limit.burst`, not `….rate_limit`.
                    let inner = e.path().to_string();
                    let at = if inner == "." || inner.is_empty() {
                        format!("{path}.rate_limit")
                    } else {
                        format!("{path}.rate_limit.{inner}")
                    };
                    c.err(&at, e.into_inner().to_string());
                    None
                }
            }
        }
        other => {
            c.err(path, format!("{other} is not an action; use \"drop\", \"pass\", \"monitor\" or {{\"rate_limit\": {{...}}}}"));
            None
        }
    }
}

fn frags(c: &mut Ctx, v: &Value, path: &str) -> Option<Vec<FragMatch>> {
    let mut out = Vec::new();
    let mut ok = true;
    let items = one_or_many(v);
    if items.is_empty() {
        c.err(
            path,
            "an empty list matches nothing; give \"none\", \"first\", \"later\" or \"any\", or leave the field out",
        );
        return None;
    }
    for (i, x) in items {
        match x.as_str() {
            Some("none") => out.push(FragMatch::None),
            Some("first") => out.push(FragMatch::First),
            Some("later") => out.push(FragMatch::Later),
            Some("any") => out.push(FragMatch::Any),
            _ => {
                c.err(&at(path, i), format!("{x} is not a fragment position; use \"none\", \"first\", \"later\" or \"any\""));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn vlans(c: &mut Ctx, v: &Value, path: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    let mut ok = true;
    let items = one_or_many(v);
    if items.is_empty() {
        c.err(
            path,
            "an empty list matches nothing; give at least one VLAN id or leave the field out",
        );
        return None;
    }
    for (i, x) in items {
        match number(x, 4095, "VLAN id") {
            Ok(n) => out.push(n as u16),
            Err(m) => {
                c.err(&at(path, i), m);
                ok = false;
            }
        }
    }
    if out.len() > RULE_MAX_VLANS {
        c.err(
            path,
            format!(
                "{} VLAN ids; a rule holds at most {RULE_MAX_VLANS}",
                out.len()
            ),
        );
        return None;
    }
    ok.then_some(out)
}

/// Validates a rule's `match` into `spec`'s fields.
fn validate_match(c: &mut Ctx, m: &MatchDoc, path: &str, spec: &mut RuleSpec, prefixes: &[Net]) {
    if let Some(v) = &m.protocol {
        spec.protocol = protocols(c, v, &format!("{path}.protocol"));
    }
    if let Some(l) = &m.sources {
        spec.sources = cidrs(c, l, &format!("{path}.sources"));
    }
    if let Some(l) = &m.destinations {
        let p = format!("{path}.destinations");
        spec.destinations = cidrs(c, l, &p);
        if let Some(ds) = &spec.destinations {
            for (i, d) in ds.iter().enumerate() {
                if !prefixes.iter().any(|n| n.covers(d)) {
                    c.err(
                        &format!("{p}[{i}]"),
                        format!(
                            "{} is outside the customer's prefixes ({}); a rule can only name the customer's own destinations",
                            format_net(d),
                            prefixes.iter().map(format_net).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
        }
    }
    if let Some(v) = &m.src_ports {
        spec.src_ports = ports(c, v, &format!("{path}.src_ports"));
    }
    if let Some(v) = &m.dst_ports {
        spec.dst_ports = ports(c, v, &format!("{path}.dst_ports"));
    }
    if let Some(f) = &m.tcp_flags {
        let p = format!("{path}.tcp_flags");
        let set = flags(c, &f.set, &format!("{p}.set"));
        let unset = flags(c, &f.unset, &format!("{p}.unset"));
        if let (Some(s), Some(u)) = (set, unset) {
            if s & u != 0 {
                c.err(&p, "a flag cannot be both set and unset");
            } else if s == 0 && u == 0 {
                c.err(&p, "give flags in set, unset or both");
            } else {
                spec.tcp_flags = Some((s, u));
            }
        }
    }
    if let Some(v) = &m.icmp_type {
        spec.icmp_type = numbers(c, v, &format!("{path}.icmp_type"), 255, "ICMP type");
    }
    if let Some(v) = &m.icmp_code {
        spec.icmp_code = numbers(c, v, &format!("{path}.icmp_code"), 255, "ICMP code");
    }
    if let Some(r) = &m.length {
        spec.length = range(c, r, &format!("{path}.length"), 65_575, "IP length")
            .map(|(a, b)| (a as u32, b as u32));
    }
    if let Some(r) = &m.ttl {
        spec.ttl = range(c, r, &format!("{path}.ttl"), 255, "TTL").map(|(a, b)| (a as u8, b as u8));
    }
    if let Some(v) = &m.dscp {
        spec.dscp = numbers(c, v, &format!("{path}.dscp"), 63, "DSCP value");
    }
    if let Some(v) = &m.fragment {
        spec.fragment = frags(c, v, &format!("{path}.fragment"));
    }
    if let Some(v) = &m.vlan {
        spec.vlan = vlans(c, v, &format!("{path}.vlan"));
    }
}

/// Rule ids from here up belong to the layers mssp writes itself: fleet decisions
/// ([`FLEET_RULE_IDS`]..) and this edge's attack mitigations ([`AUTO_RULE_IDS`]..). A central
/// or local rule cannot take them, so no layer's rule ever replaces another by accident.
pub const RESERVED_RULE_IDS: u32 = 0xE000_0000;
pub const FLEET_RULE_IDS: u32 = 0xE000_0000;
pub const AUTO_RULE_IDS: u32 = 0xF000_0000;

/// Validates one rule of a customer whose prefixes are `prefixes`.
pub fn rule(
    doc: &RuleDoc,
    path: &str,
    prefixes: &[Net],
    errors: &mut Vec<FieldError>,
) -> Option<RuleSpec> {
    let before = errors.len();
    let mut c = Ctx { errors };
    let act = action(&mut c, &doc.action, &format!("{path}.action"));
    let mut spec = RuleSpec {
        id: doc.id,
        protocol: None,
        sources: None,
        destinations: None,
        src_ports: None,
        dst_ports: None,
        tcp_flags: None,
        icmp_type: None,
        icmp_code: None,
        length: None,
        ttl: None,
        dscp: None,
        fragment: None,
        vlan: None,
        action: act.clone().unwrap_or(RuleAction::Monitor),
        comment: doc.comment.clone(),
    };
    validate_match(
        &mut c,
        &doc.matches,
        &format!("{path}.match"),
        &mut spec,
        prefixes,
    );
    (c.errors.len() == before && act.is_some()).then_some(spec)
}

/// Validates a customer's rule list (ids unique, at most [`MAX_RULES_PER_CUSTOMER`]).
pub fn rules(
    docs: &[RuleDoc],
    path: &str,
    prefixes: &[Net],
    errors: &mut Vec<FieldError>,
) -> Vec<RuleSpec> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::new();
    if docs.len() > MAX_RULES_PER_CUSTOMER as usize {
        errors.push(FieldError {
            path: path.into(),
            message: format!(
                "{} rules; a customer holds at most {MAX_RULES_PER_CUSTOMER}",
                docs.len()
            ),
        });
    }
    for (i, d) in docs.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if d.id >= RESERVED_RULE_IDS {
            errors.push(FieldError {
                path: format!("{p}.id"),
                message: format!(
                    "rule id {} is reserved: ids from {RESERVED_RULE_IDS} up are the auto and fleet layers'; use a smaller id",
                    d.id
                ),
            });
            continue;
        }
        if let Some(first) = seen.insert(d.id, i) {
            errors.push(FieldError {
                path: format!("{p}.id"),
                message: format!(
                    "rule id {} is used twice (also {path}[{first}]); ids are unique per customer",
                    d.id
                ),
            });
            continue;
        }
        if let Some(r) = rule(d, &p, prefixes, errors) {
            out.push(r);
        }
    }
    out
}

pub fn limits(doc: &LimitsDoc, path: &str, errors: &mut Vec<FieldError>) -> Option<Limits> {
    let mut ok = true;
    for (name, v) in [("pps", doc.pps), ("bps", doc.bps)] {
        if v == Some(0) {
            errors.push(FieldError {
                path: format!("{path}.{name}"),
                message: format!("a {name} of 0 is refused; leave it out for no limit"),
            });
            ok = false;
        }
    }
    if doc.pps.is_none() && doc.bps.is_none() {
        errors.push(FieldError {
            path: path.into(),
            message: "give pps, bps or both (or leave limits out)".into(),
        });
        ok = false;
    }
    ok.then_some(Limits {
        pps: doc.pps,
        bps: doc.bps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<RuleSpec, Vec<FieldError>> {
        let doc: RuleDoc = serde_json::from_str(json).unwrap();
        let prefixes = vec![parse_cidr("198.19.7.0/24", false).unwrap()];
        let mut errors = Vec::new();
        rule(&doc, "customers[0].rules[0]", &prefixes, &mut errors).ok_or(errors)
    }

    fn refused(json: &str, path: &str, needle: &str) {
        let e = check(json).unwrap_err();
        assert!(
            e.iter()
                .any(|f| f.path == path && f.message.contains(needle)),
            "{json}: wanted {path}: ...{needle}...; got {e:?}"
        );
    }

    #[test]
    fn the_issue_examples() {
        let r = check(r#"{"id": 10, "match": {"protocol": "udp", "src_ports": ["53", "123", "11211"], "length": {"min": 600}}, "action": "drop", "comment": "amplification"}"#).unwrap();
        assert_eq!(r.protocol, Some(vec![17]));
        assert_eq!(
            r.src_ports,
            Some(vec![(53, 53), (123, 123), (11211, 11211)])
        );
        assert_eq!(r.length, Some((600, 65_575)));
        let r = check(r#"{"id": 11, "match": {"protocol": "tcp", "dst_ports": ["22"], "tcp_flags": {"set": ["syn"], "unset": ["ack"]}}, "action": {"rate_limit": {"pps": 10, "burst": 50}}}"#).unwrap();
        assert_eq!(r.tcp_flags, Some((0x02, 0x10)));
        assert!(matches!(
            r.action,
            RuleAction::RateLimit(RateSpec {
                pps: Some(10),
                burst: Some(50),
                ..
            })
        ));
        let r = check(r#"{"id": 12, "match": {"protocol": "icmp"}, "action": {"rate_limit": {"pps": 1, "burst": 10, "per_source": true}}}"#).unwrap();
        assert!(matches!(
            r.action,
            RuleAction::RateLimit(RateSpec {
                per_source: true,
                ..
            })
        ));
    }

    #[test]
    fn refusals_name_the_bad_value() {
        refused(
            r#"{"id":1,"match":{"dst_ports":["70000"]},"action":"drop"}"#,
            "customers[0].rules[0].match.dst_ports[0]",
            "port 70000 is over 65535",
        );
        refused(
            r#"{"id":1,"match":{"src_ports":["100-50"]},"action":"drop"}"#,
            "customers[0].rules[0].match.src_ports[0]",
            "inverted",
        );
        refused(
            r#"{"id":1,"match":{"src_ports":[]},"action":"drop"}"#,
            "customers[0].rules[0].match.src_ports",
            "empty list",
        );
        refused(
            r#"{"id":1,"match":{},"action":{"rate_limit":{"pps":0}}}"#,
            "customers[0].rules[0].action.rate_limit.pps",
            "a pps of 0",
        );
        refused(
            r#"{"id":1,"match":{"tcp_flags":{"set":["syn","push"]}},"action":"drop"}"#,
            "customers[0].rules[0].match.tcp_flags.set[1]",
            "unknown TCP flag \"push\"",
        );
        refused(
            r#"{"id":1,"match":{"protocol":"tpc"},"action":"drop"}"#,
            "customers[0].rules[0].match.protocol",
            "unknown protocol \"tpc\"",
        );
        refused(
            r#"{"id":1,"match":{"protocol":300},"action":"drop"}"#,
            "customers[0].rules[0].match.protocol",
            "over 255",
        );
        refused(
            r#"{"id":1,"match":{"destinations":["198.19.8.0/24"]},"action":"drop"}"#,
            "customers[0].rules[0].match.destinations[0]",
            "198.19.8.0/24 is outside the customer's prefixes",
        );
        refused(
            r#"{"id":1,"match":{"length":{"min":900,"max":100}},"action":"drop"}"#,
            "customers[0].rules[0].match.length",
            "min 900 is above max 100",
        );
        refused(
            r#"{"id":1,"match":{"dscp":64},"action":"drop"}"#,
            "customers[0].rules[0].match.dscp",
            "over 63",
        );
        refused(
            r#"{"id":1,"match":{"fragment":"middle"},"action":"drop"}"#,
            "customers[0].rules[0].match.fragment",
            "not a fragment position",
        );
        refused(
            r#"{"id":1,"match":{"vlan":5000},"action":"drop"}"#,
            "customers[0].rules[0].match.vlan",
            "over 4095",
        );
        refused(
            r#"{"id":1,"match":{},"action":"reject"}"#,
            "customers[0].rules[0].action",
            "unknown action \"reject\"",
        );
        refused(
            r#"{"id":1,"match":{"sources":["198.18.0.1/24"]},"action":"drop"}"#,
            "customers[0].rules[0].match.sources[0]",
            "did you mean 198.18.0.0/24",
        );
    }

    #[test]
    fn duplicate_ids() {
        let docs: Vec<RuleDoc> =
            serde_json::from_str(r#"[{"id":5,"action":"drop"},{"id":5,"action":"pass"}]"#).unwrap();
        let mut errors = Vec::new();
        rules(&docs, "customers[0].rules", &[], &mut errors);
        assert_eq!(errors[0].path, "customers[0].rules[1].id");
        assert!(errors[0].message.contains("rule id 5 is used twice"));
    }
}
