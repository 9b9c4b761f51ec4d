//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A [`Sum`] accumulates 16-bit words in a `u64` and folds the carries back in at the end, the
//! one's-complement way. Updating a checksum when fields change is RFC 1624's equation 3,
//! `HC' = ~(~HC + ~m + m')`: start from [`Sum::from_checksum`], [`Sum::sub`] every old word and
//! [`Sum::add`] every new one. Words are numbers, read big-endian from the packet.

/// A one's-complement sum of 16-bit words, not yet folded.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct Sum(u64);

impl Sum {
    /// The empty sum.
    #[inline(always)]
    pub const fn new() -> Self {
        Sum(0)
    }

    /// The sum a checksum was computed from (its complement), to update it incrementally.
    #[inline(always)]
    pub const fn from_checksum(checksum: u16) -> Self {
        Sum(!checksum as u64)
    }

    /// Adds a word.
    #[inline(always)]
    pub const fn add(self, word: u16) -> Self {
        Sum(self.0 + word as u64)
    }

    /// Adds a sum computed elsewhere, unfolded (e.g. the 32-bit sums `bpf_csum_diff` returns,
    /// added up): one's-complement addition is the same whatever the width, as long as
    /// [`Sum::fold`] brings the carries back in.
    #[inline(always)]
    pub const fn add_wide(self, sum: u64) -> Self {
        Sum(self.0 + sum)
    }

    /// Takes a word out (adds its complement).
    #[inline(always)]
    pub const fn sub(self, word: u16) -> Self {
        Sum(self.0 + !word as u64)
    }

    /// Adds a 32-bit value as its two words.
    #[inline(always)]
    pub const fn add32(self, value: u32) -> Self {
        self.add((value >> 16) as u16).add(value as u16)
    }

    /// Takes a 32-bit value out.
    #[inline(always)]
    pub const fn sub32(self, value: u32) -> Self {
        self.sub((value >> 16) as u16).sub(value as u16)
    }

    /// Adds a byte at an even (`high`) or odd offset of the checksummed data.
    #[inline(always)]
    pub const fn add_byte(self, byte: u8, high: bool) -> Self {
        self.add(if high {
            (byte as u16) << 8
        } else {
            byte as u16
        })
    }

    /// Takes a byte out, at an even (`high`) or odd offset.
    #[inline(always)]
    pub const fn sub_byte(self, byte: u8, high: bool) -> Self {
        self.sub(if high {
            (byte as u16) << 8
        } else {
            byte as u16
        })
    }

    /// Adds an address in the crate's 16-byte layout: 2 words for IPv4, 8 for IPv6.
    #[inline(always)]
    pub const fn add_addr(self, addr: &[u8; 16], ipv6: bool) -> Self {
        let mut s = self;
        let words = if ipv6 { 8 } else { 2 };
        let mut i = 0;
        while i < words {
            s = s.add(u16::from_be_bytes([addr[2 * i], addr[2 * i + 1]]));
            i += 1;
        }
        s
    }

    /// Takes an address out.
    #[inline(always)]
    pub const fn sub_addr(self, addr: &[u8; 16], ipv6: bool) -> Self {
        let mut s = self;
        let words = if ipv6 { 8 } else { 2 };
        let mut i = 0;
        while i < words {
            s = s.sub(u16::from_be_bytes([addr[2 * i], addr[2 * i + 1]]));
            i += 1;
        }
        s
    }

    /// Adds bytes that start at an even offset of the checksummed data (an odd last byte is
    /// padded with zero, as RFC 1071 does). For headers and for tests; the program never sums
    /// a payload.
    pub const fn add_bytes(self, bytes: &[u8]) -> Self {
        let mut s = self;
        let mut i = 0;
        while i + 1 < bytes.len() {
            s = s.add(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
            i += 2;
        }
        if i < bytes.len() {
            s = s.add_byte(bytes[i], true);
        }
        s
    }

    /// The folded 16-bit one's-complement sum. Four folds are enough for any `u64`: the first
    /// leaves at most 33 bits, the second 18, the third 0x10002, the fourth 0xFFFF.
    #[inline(always)]
    pub const fn fold(self) -> u16 {
        let mut s = (self.0 & 0xFFFF_FFFF) + (self.0 >> 32);
        s = (s & 0xFFFF) + (s >> 16);
        s = (s & 0xFFFF) + (s >> 16);
        s = (s & 0xFFFF) + (s >> 16);
        s as u16
    }

    /// The checksum: the complement of the folded sum.
    #[inline(always)]
    pub const fn checksum(self) -> u16 {
        !self.fold()
    }

    /// The checksum as UDP writes it: a computed zero is sent as 0xFFFF, because zero on the
    /// wire means "no checksum" (RFC 768).
    #[inline(always)]
    pub const fn udp_checksum(self) -> u16 {
        match self.checksum() {
            0 => 0xFFFF,
            c => c,
        }
    }
}

/// The checksum of `bytes` (RFC 1071), computed in full.
pub const fn checksum(bytes: &[u8]) -> u16 {
    Sum::new().add_bytes(bytes).checksum()
}

/// Whether data that includes its own checksum field adds up (its folded sum is all ones).
pub const fn verifies(sum: Sum) -> bool {
    sum.fold() == 0xFFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 §3's example: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
    #[test]
    fn rfc1071_example() {
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Sum::new().add_bytes(&bytes).fold(), 0xddf2);
        assert_eq!(checksum(&bytes), !0xddf2);
    }

    /// A real IPv4 header (Wikipedia's worked example), checksum b861.
    #[test]
    fn ipv4_header() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verifies(Sum::new().add_bytes(&h)));
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        // TTL 64 -> 63 and destination 192.168.0.199 -> 10.1.2.3.
        let updated = Sum::from_checksum(0xb861)
            .sub(0x4011)
            .add(0x3f11)
            .sub32(0xc0a8_00c7)
            .add32(0x0a01_0203)
            .checksum();
        h[8] = 0x3f;
        h[16..20].copy_from_slice(&[10, 1, 2, 3]);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&h));
    }

    #[test]
    fn bytes_at_odd_offsets_are_low_bytes() {
        let data = [0x12, 0x34, 0x56];
        let by_bytes = Sum::new()
            .add_byte(0x12, true)
            .add_byte(0x34, false)
            .add_byte(0x56, true);
        assert_eq!(by_bytes.fold(), Sum::new().add_bytes(&data).fold());
        // Taking the last byte out is summing the first two only.
        assert_eq!(
            Sum::new().add_bytes(&data).sub_byte(0x56, true).fold(),
            Sum::new().add_bytes(&data[..2]).fold()
        );
    }

    #[test]
    fn folding_survives_huge_sums() {
        // u64::MAX is four 0xFFFF words.
        assert_eq!(Sum(u64::MAX).fold(), 0xFFFF);
        assert_eq!(Sum(0x1_0000_0000).fold(), 1);
        // Summing 0xFFFF many times is still "negative zero".
        let mut s = Sum::new();
        for _ in 0..100_000 {
            s = s.add(0xFFFF);
        }
        assert_eq!(s.fold(), 0xFFFF);
    }

    #[test]
    fn udp_zero_is_sent_as_all_ones() {
        // A sum that folds to 0xFFFF has checksum 0, which UDP must not send.
        assert_eq!(Sum::new().add(0xFFFF).checksum(), 0);
        assert_eq!(Sum::new().add(0xFFFF).udp_checksum(), 0xFFFF);
        assert_eq!(Sum::new().add(0x1234).udp_checksum(), !0x1234);
    }
}
