//! Content filtering settings of a customer (or the ISP-wide `global.filtering`): the
//! document's `"filtering"` object and its validated form. The inspector matches DNS
//! question names, TLS SNI and HTTP Host against `block_domains`; a name blocks itself and
//! every name under it.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{FieldError, strict};

/// Names per list (a customer's, or the global one).
pub const MAX_BLOCK_DOMAINS: usize = 1_048_576;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "filtering: an object with block_domains, action, sinkhole and quic"
)]
pub struct FilteringDoc {
    #[serde(default)]
    pub block_domains: Vec<String>,
    /// `"nxdomain"` (default), `"sinkhole"` or `"drop"`: what a blocked DNS query gets.
    /// Blocked TLS and HTTP connections are always reset.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<String>,
    /// The addresses a sinkholed A / AAAA query is answered with.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub sinkhole: Option<SinkholeDoc>,
    /// `"pass"` (default) or `"block"`: block QUIC (UDP/443), so browsers fall back to TCP
    /// where the name can be read.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub quic: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "sinkhole: an object with ipv4 and/or ipv6"
)]
pub struct SinkholeDoc {
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4: Option<String>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6: Option<String>,
}

crate::strict_struct!(FilteringDoc);
crate::strict_struct!(SinkholeDoc);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    #[default]
    Nxdomain,
    Sinkhole,
    Drop,
}

impl FilterAction {
    pub const fn name(self) -> &'static str {
        match self {
            FilterAction::Nxdomain => "nxdomain",
            FilterAction::Sinkhole => "sinkhole",
            FilterAction::Drop => "drop",
        }
    }
}

/// Validated filtering settings. `block_domains` are normalised: lower case, no trailing
/// dot, sorted, without duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Filtering {
    pub block_domains: Vec<String>,
    pub action: FilterAction,
    pub sinkhole_v4: Option<Ipv4Addr>,
    pub sinkhole_v6: Option<Ipv6Addr>,
    pub block_quic: bool,
}

impl Filtering {
    /// Whether anything is inspected for this list.
    pub fn inspects(&self) -> bool {
        !self.block_domains.is_empty()
    }

    /// The document form (what `filter list` prints and the local layer stores).
    pub fn to_doc(&self) -> FilteringDoc {
        FilteringDoc {
            block_domains: self.block_domains.clone(),
            action: Some(self.action.name().into()),
            sinkhole: (self.sinkhole_v4.is_some() || self.sinkhole_v6.is_some()).then(|| {
                SinkholeDoc {
                    ipv4: self.sinkhole_v4.map(|a| a.to_string()),
                    ipv6: self.sinkhole_v6.map(|a| a.to_string()),
                }
            }),
            quic: Some(if self.block_quic { "block" } else { "pass" }.into()),
        }
    }
}

/// A domain name as the lists hold it: lower case, no trailing dot; labels of 1 to 63
/// letters, digits, `-` or `_`, not starting or ending with `-`; 253 characters at most.
/// `Err` says what is wrong.
pub fn normalize_domain(name: &str) -> Result<String, String> {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() {
        return Err("is empty; give a name like \"bad.example\"".into());
    }
    if n.len() > 253 {
        return Err(format!(
            "is {} characters long; a DNS name has at most 253",
            n.len()
        ));
    }
    let n = n.to_ascii_lowercase();
    for label in n.split('.') {
        if label.is_empty() {
            return Err("has an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Err(format!(
                "has a label of {} characters; at most 63",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "has {c:?} in label {label:?}; labels are letters, digits, '-' and '_' (IDNs in punycode, xn--...)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(n)
}

/// Validates a `filtering` object at `path`; problems go to `errors`.
pub fn filtering(
    doc: &FilteringDoc,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Filtering> {
    let before = errors.len();
    let mut err = |field: String, message: String| {
        errors.push(FieldError {
            path: format!("{path}.{field}"),
            message,
        })
    };
    if doc.block_domains.len() > MAX_BLOCK_DOMAINS {
        err(
            "block_domains".into(),
            format!(
                "{} names; a list holds at most {MAX_BLOCK_DOMAINS}",
                doc.block_domains.len()
            ),
        );
    }
    let mut names = Vec::with_capacity(doc.block_domains.len());
    let mut bad = 0;
    for (i, d) in doc.block_domains.iter().enumerate() {
        match normalize_domain(d) {
            Ok(n) => names.push(n),
            Err(m) => {
                bad += 1;
                // A million-name feed with a systematic fault names its first few.
                if bad <= 20 {
                    err(format!("block_domains[{i}]"), format!("{d:?} {m}"));
                }
            }
        }
    }
    if bad > 20 {
        err(
            "block_domains".into(),
            format!("{bad} names are not valid in all (the first 20 are listed)"),
        );
    }
    names.sort_unstable();
    names.dedup();
    let action = match doc.action.as_deref() {
        None | Some("nxdomain") => FilterAction::Nxdomain,
        Some("sinkhole") => FilterAction::Sinkhole,
        Some("drop") => FilterAction::Drop,
        Some(other) => {
            err(
                "action".into(),
                format!(
                    "{other:?} is not a filtering action; use \"nxdomain\", \"sinkhole\" or \"drop\""
                ),
            );
            FilterAction::Nxdomain
        }
    };
    let (mut v4, mut v6) = (None, None);
    if let Some(s) = &doc.sinkhole {
        if let Some(a) = &s.ipv4 {
            match a.parse::<Ipv4Addr>() {
                Ok(a) => v4 = Some(a),
                Err(_) => err(
                    "sinkhole.ipv4".into(),
                    format!("{a:?} is not an IPv4 address like \"198.18.0.1\""),
                ),
            }
        }
        if let Some(a) = &s.ipv6 {
            match a.parse::<Ipv6Addr>() {
                Ok(a) => v6 = Some(a),
                Err(_) => err(
                    "sinkhole.ipv6".into(),
                    format!("{a:?} is not an IPv6 address like \"2001:db8::1\""),
                ),
            }
        }
    }
    if action == FilterAction::Sinkhole
        && doc
            .sinkhole
            .as_ref()
            .is_none_or(|s| s.ipv4.is_none() && s.ipv6.is_none())
    {
        err(
            "sinkhole".into(),
            "action \"sinkhole\" needs a sinkhole address: {\"ipv4\": ..., \"ipv6\": ...}".into(),
        );
    }
    let block_quic = match doc.quic.as_deref() {
        None | Some("pass") => false,
        Some("block") => true,
        Some(other) => {
            err(
                "quic".into(),
                format!("{other:?}: use \"pass\" or \"block\""),
            );
            false
        }
    };
    (errors.len() == before).then_some(Filtering {
        block_domains: names,
        action,
        sinkhole_v4: v4,
        sinkhole_v6: v6,
        block_quic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_or_refused_with_the_reason() {
        assert_eq!(normalize_domain("Bad.Test.").unwrap(), "bad.test");
        assert_eq!(
            normalize_domain("_dmarc.x-y.test").unwrap(),
            "_dmarc.x-y.test"
        );
        for (bad, why) in [
            ("", "empty"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            ("-a.test", "starts or ends"),
            ("a b.test", "labels are letters"),
            ("bücher.test", "punycode"),
        ] {
            let e = normalize_domain(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(
            normalize_domain(&"a".repeat(64))
                .unwrap_err()
                .contains("63")
        );
        assert!(
            normalize_domain(&["a"; 130].join("."))
                .unwrap_err()
                .contains("253")
        );
    }

    #[test]
    fn a_document_is_validated_field_by_field() {
        let doc: FilteringDoc = serde_json::from_str(
            r#"{"block_domains":["b.test","A.test","b.test","x..y"],"action":"sinkhole","quic":"maybe"}"#,
        )
        .unwrap();
        let mut errors = Vec::new();
        assert!(filtering(&doc, "customers[0].filtering", &mut errors).is_none());
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let text = text.join("\n");
        assert!(
            text.contains("customers[0].filtering.block_domains[3]: \"x..y\""),
            "{text}"
        );
        assert!(
            text.contains("customers[0].filtering.sinkhole: action \"sinkhole\" needs"),
            "{text}"
        );
        assert!(
            text.contains("customers[0].filtering.quic: \"maybe\""),
            "{text}"
        );

        let doc: FilteringDoc = serde_json::from_str(
            r#"{"block_domains":["b.test","A.test","b.test"],"action":"sinkhole","sinkhole":{"ipv4":"198.18.0.9"},"quic":"block"}"#,
        )
        .unwrap();
        let f = filtering(&doc, "global.filtering", &mut errors).unwrap();
        assert_eq!(f.block_domains, vec!["a.test", "b.test"]);
        assert_eq!(f.sinkhole_v4, Some(Ipv4Addr::new(198, 18, 0, 9)));
        assert!(f.block_quic);
        assert!(serde_json::from_str::<FilteringDoc>(r#"{"block":[]}"#).is_err());
    }
}
