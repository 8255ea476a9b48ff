//! An IP prefix in the form both the compiler and the reference classifier use: the address as
//! a number (IPv4 in the low 32 bits), so containment is plain integer arithmetic.

///
/// Packed to 4-byte alignment: 20 bytes instead of 32, over three copies of a million-entry
/// policy (validated, desired, id keys) ~50 MiB of the agent's memory. Fields are read by
/// value (`{ n.addr }` where a reference would be taken).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(packed(4))]
pub struct Net {
    pub v6: bool,
    /// Network address, host bits zero. IPv4 uses the low 32 bits.
    pub addr: u128,
    pub len: u8,
}

impl Net {
    pub const fn bits(v6: bool) -> u8 {
        if v6 { 128 } else { 32 }
    }

    pub const fn max_addr(v6: bool) -> u128 {
        if v6 { u128::MAX } else { u32::MAX as u128 }
    }

    /// Mask of the host bits of a prefix of `len` bits.
    pub const fn host_mask(v6: bool, len: u8) -> u128 {
        let bits = Self::bits(v6);
        if len >= bits {
            0
        } else {
            Self::max_addr(v6) >> len
        }
    }

    /// The prefix of `len` bits containing `addr` (host bits cleared).
    pub const fn new(v6: bool, addr: u128, len: u8) -> Net {
        Net {
            v6,
            addr: addr & !Self::host_mask(v6, len),
            len,
        }
    }

    /// First address.
    pub const fn start(&self) -> u128 {
        self.addr
    }

    /// Last address (inclusive).
    pub const fn end(&self) -> u128 {
        self.addr | Self::host_mask(self.v6, self.len)
    }

    pub const fn contains(&self, v6: bool, addr: u128) -> bool {
        self.v6 == v6 && addr >= self.start() && addr <= self.end()
    }

    /// Whether `other` lies inside `self` (equal counts).
    pub const fn covers(&self, other: &Net) -> bool {
        self.v6 == other.v6
            && self.len <= other.len
            && other.start() >= self.start()
            && other.end() <= self.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_net_is_twenty_bytes() {
        assert_eq!(core::mem::size_of::<Net>(), 20);
    }

    #[test]
    fn ranges() {
        let n = Net::new(false, 0xc612_4201, 24);
        assert_eq!({ n.addr }, 0xc612_4200);
        assert_eq!(n.end(), 0xc612_42ff);
        assert!(n.contains(false, 0xc612_42ff));
        assert!(!n.contains(true, 0xc612_42ff));
        let all = Net::new(false, 0, 0);
        assert_eq!(all.end(), u32::MAX as u128);
        let all6 = Net::new(true, 5, 0);
        assert_eq!((all6.start(), all6.end()), (0, u128::MAX));
        let host = Net::new(true, 7, 128);
        assert_eq!((host.start(), host.end()), (7, 7));
        assert!(all.covers(&n) && !n.covers(&all));
    }
}
