//! CIDR text <-> [`Net`], with refusals that say what would have been right.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use mssp_common::Net;

/// Parses `a.b.c.d/len` or `x::y/len`. With `allow_bare`, an address without `/len` is a host
/// prefix (the CLI accepts that; documents must be explicit).
pub fn parse_cidr(text: &str, allow_bare: bool) -> Result<Net, String> {
    if text.chars().any(char::is_whitespace) {
        return Err(format!(
            "{text:?} is not a CIDR: it contains spaces; write e.g. 198.18.66.0/24"
        ));
    }
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| {
        format!("{text:?} is not a CIDR: {addr_text:?} is not an IPv4 or IPv6 address")
    })?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len_text {
        Some(l) => {
            // Plain decimal only: "+24", "024" or "0x18" are not prefix lengths.
            let canonical = !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_digit())
                && (l == "0" || !l.starts_with('0'));
            canonical
                .then(|| l.parse::<u8>().ok())
                .flatten()
                .filter(|len| *len <= bits)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a CIDR: prefix length {l:?} must be 0 to {bits} for {}",
                        if bits == 32 { "IPv4" } else { "IPv6" }
                    )
                })?
        }
        None if allow_bare => bits,
        None => {
            return Err(format!(
                "{text:?} is not a CIDR: the prefix length is missing (write {text}/{bits} for one address)"
            ));
        }
    };
    let net = IpNetwork::new(addr, len).map_err(|e| format!("{text:?} is not a CIDR: {e}"))?;
    if net.network() != addr {
        let meant =
            IpNetwork::new(net.network(), len).map_or_else(|_| String::new(), |n| n.to_string());
        return Err(format!("{text:?} has host bits set; did you mean {meant}?"));
    }
    Ok(match addr {
        IpAddr::V4(a) => Net::new(false, u32::from(a) as u128, len),
        IpAddr::V6(a) => Net::new(true, u128::from(a), len),
    })
}

/// `Net` back to CIDR text.
pub fn format_net(net: &Net) -> String {
    if net.v6 {
        format!("{}/{}", Ipv6Addr::from(net.addr), net.len)
    } else {
        format!("{}/{}", Ipv4Addr::from(net.addr as u32), net.len)
    }
}

/// An address of `net`'s family as text.
pub fn format_addr(v6: bool, addr: u128) -> String {
    if v6 {
        Ipv6Addr::from(addr).to_string()
    } else {
        Ipv4Addr::from(addr as u32).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        let n = parse_cidr("198.18.66.0/24", false).unwrap();
        assert_eq!(format_net(&n), "198.18.66.0/24");
        let n = parse_cidr("2001:db8:7::/48", false).unwrap();
        assert_eq!(format_net(&n), "2001:db8:7::/48");
        assert_eq!(
            format_net(&parse_cidr("198.18.1.1", true).unwrap()),
            "198.18.1.1/32"
        );
        assert_eq!(
            format_net(&parse_cidr("2001:db8::1", true).unwrap()),
            "2001:db8::1/128"
        );
        assert_eq!(
            format_net(&parse_cidr("0.0.0.0/0", false).unwrap()),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let e = parse_cidr("198.18.66.0/33", false).unwrap_err();
        assert!(
            e.contains("prefix length \"33\" must be 0 to 32 for IPv4"),
            "{e}"
        );
        let e = parse_cidr("198.18.66.1/24", false).unwrap_err();
        assert!(e.contains("did you mean 198.18.66.0/24"), "{e}");
        let e = parse_cidr("2001:db8:7::1/48", false).unwrap_err();
        assert!(e.contains("did you mean 2001:db8:7::/48"), "{e}");
        let e = parse_cidr("198.18.66/24", false).unwrap_err();
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
        let e = parse_cidr("198.18.66.0", false).unwrap_err();
        assert!(e.contains("prefix length is missing"), "{e}");
        let e = parse_cidr("2001:db8::/129", false).unwrap_err();
        assert!(e.contains("0 to 128 for IPv6"), "{e}");
        // Regression: these were accepted as /24.
        for bad in [
            "198.18.66.0/+24",
            "198.18.66.0/024",
            "198.18.66.0/ 24",
            " 198.18.66.0/24",
            "198.18.66.0/24 ",
        ] {
            assert!(parse_cidr(bad, false).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            format_net(&parse_cidr("0.0.0.0/0", false).unwrap()),
            "0.0.0.0/0"
        );
    }
}
