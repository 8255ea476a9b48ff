//! A list of blocked names with suffix matching: a name is blocked when it, or any name it
//! is under, is in the list. One hash lookup per label of the queried name (a handful),
//! whatever the list's size.

use foldhash::HashSet;

#[derive(Clone, Debug, Default)]
pub struct NameSet {
    names: HashSet<Box<str>>,
}

impl NameSet {
    /// From normalised names (lower case, no trailing dot; see
    /// `mssp_core::policy::filtering::normalize_domain`).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> NameSet {
        let it = names.into_iter();
        let mut set = HashSet::with_capacity_and_hasher(it.size_hint().0, Default::default());
        set.extend(it.map(Box::from));
        NameSet { names: set }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The listed name that blocks `name` (itself or the nearest name it is under).
    /// `name` must be lower case without a trailing dot.
    pub fn matching<'a>(&'a self, name: &str) -> Option<&'a str> {
        if self.names.is_empty() {
            return None;
        }
        let mut rest = name;
        loop {
            if let Some(hit) = self.names.get(rest) {
                return Some(hit);
            }
            rest = &rest[rest.find('.')? + 1..];
        }
    }
}

/// A name as it comes off the wire, made comparable: lower case, no trailing dot. `None`
/// for names that are not plain host names (nothing in a list can match them).
pub fn canonical(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > 253 {
        return None;
    }
    let s = std::str::from_utf8(raw).ok()?;
    Some(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_blocks_itself_and_what_is_under_it_only() {
        let s = NameSet::new(["bad.test", "evil.example"]);
        assert_eq!(s.matching("bad.test"), Some("bad.test"));
        assert_eq!(s.matching("www.bad.test"), Some("bad.test"));
        assert_eq!(s.matching("a.b.c.bad.test"), Some("bad.test"));
        assert_eq!(s.matching("notbad.test"), None);
        assert_eq!(s.matching("bad.test.org"), None);
        assert_eq!(s.matching("test"), None);
        assert_eq!(canonical(b"WWW.Bad.Test."), Some("www.bad.test".into()));
    }

    #[test]
    fn a_million_names_match_by_suffix() {
        let names: Vec<String> = (0..1_000_000)
            .map(|i| format!("host{i}.feed.test"))
            .collect();
        let s = NameSet::new(names.iter().map(String::as_str));
        assert_eq!(s.len(), 1_000_000);
        assert_eq!(
            s.matching("a.host999999.feed.test"),
            Some("host999999.feed.test")
        );
        assert_eq!(s.matching("host1000000.feed.test"), None);
    }
}
