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

/// Appends `net` as [`format_net`] writes it, without `fmt`'s machinery or an allocation:
/// the id log writes a million of these per large push.
pub fn push_net(out: &mut Vec<u8>, net: &Net) {
    let mut num = itoa::Buffer::new();
    if !net.v6 {
        for (i, b) in (net.addr as u32).to_be_bytes().iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            out.extend_from_slice(num.format(*b).as_bytes());
        }
    } else {
        let a = Ipv6Addr::from(net.addr);
        if a.to_ipv4_mapped().is_some() {
            // `::ffff:a.b.c.d`: rare enough for std.
            out.extend_from_slice(a.to_string().as_bytes());
        } else {
            push_v6_groups(out, &a.segments());
        }
    }
    out.push(b'/');
    out.extend_from_slice(num.format(net.len).as_bytes());
}

/// RFC 5952 as std's `Display` does it: the first longest run of two or more zero groups
/// becomes `::`, groups in lower-case hex without leading zeros.
fn push_v6_groups(out: &mut Vec<u8>, g: &[u16; 8]) {
    let (mut best, mut best_len, mut cur, mut cur_len) = (0, 0, 0, 0);
    for (i, &x) in g.iter().enumerate() {
        if x == 0 {
            if cur_len == 0 {
                cur = i;
            }
            cur_len += 1;
            if cur_len > best_len {
                (best, best_len) = (cur, cur_len);
            }
        } else {
            cur_len = 0;
        }
    }
    let hex = |out: &mut Vec<u8>, groups: &[u16]| {
        for (i, &x) in groups.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            let digits = (16 - x.leading_zeros() as usize).div_ceil(4).max(1);
            for d in (0..digits).rev() {
                out.push(b"0123456789abcdef"[((x >> (4 * d)) & 0xf) as usize]);
            }
        }
    };
    if best_len > 1 {
        hex(out, &g[..best]);
        out.extend_from_slice(b"::");
        hex(out, &g[best + best_len..]);
    } else {
        hex(out, g);
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
    fn push_net_writes_what_format_net_writes() {
        // Every pattern of zero and non-zero groups (which decides where `::` goes), with
        // small and large group values, IPv4-mapped addresses, and IPv4 at the edges.
        let mut nets = Vec::new();
        for pattern in 0u32..256 {
            for value in [1u16, 0xa, 0xab, 0xdb8, 0xffff] {
                let mut g = [0u16; 8];
                for (i, x) in g.iter_mut().enumerate() {
                    if pattern & (1 << i) != 0 {
                        *x = value.wrapping_add(i as u16 * 0x101);
                    }
                }
                let addr = u128::from(Ipv6Addr::from(g));
                nets.push(Net::new(true, addr, 128));
            }
        }
        nets.push(Net::new(
            true,
            u128::from(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc612, 1)),
            128,
        ));
        nets.push(Net::new(
            true,
            u128::from(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc612, 1)),
            128,
        ));
        for len in [0u8, 1, 17, 48, 64, 127] {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0xabcd, 0, 0, 0, 1);
            nets.push(Net::new(true, u128::from(a), len));
        }
        for a in [0u32, 1, 0x0a00_0001, 0xc612_4201, 0xffff_ffff] {
            for len in [0u8, 9, 24, 32] {
                nets.push(Net::new(false, a as u128, len));
            }
        }
        for n in &nets {
            let mut out = Vec::new();
            push_net(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format_net(n), "{n:?}");
        }
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
