//! Wire constants and parser limits shared by the XDP parser and the reference parser.

pub const ETH_HLEN: usize = 14;
/// The shortest Ethernet frame without its FCS: shorter payloads are padded up to it (with
/// each VLAN tag, four bytes more). A frame longer than its IP datagram beyond that padding
/// is malformed.
pub const ETH_MIN_FRAME: usize = 60;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const IPV6_EXT_MIN_LEN: usize = 8;
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// ICMP and ICMPv6: type, code, checksum and the 4-byte rest of header every message has.
pub const ICMP_HLEN: usize = 8;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// VLAN tags walked; one more is `unsupported_encap`.
pub const VLAN_MAX_DEPTH: usize = 2;
/// IPv6 extension headers walked; one more is `unsupported_encap`.
pub const IPV6_EXT_MAX: usize = 8;

/// The IPv6 extension headers the parser walks (RFC 8200 section 4, plus AH).
pub const fn is_ipv6_ext(nh: u8) -> bool {
    matches!(
        nh,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
    )
}

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}
