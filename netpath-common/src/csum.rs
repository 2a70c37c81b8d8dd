//! Incremental Internet checksum updates (RFC 1624, eqn. 3) for programs
//! that write packets directly: XDP has no checksum-replace helpers.
//!
//! Every 16-bit word is taken as it lies in memory (native order), the
//! checksum field included; one's complement sums do not care which order
//! that is as long as it is the same for all of them.

#[inline(always)]
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word changed from `from` to `to`.
#[inline(always)]
pub const fn replace16(check: u16, from: u16, to: u16) -> u16 {
    !fold(!check as u32 + !from as u32 + to as u32)
}

/// The checksum after a 4-byte field (an IPv4 address) changed.
#[inline(always)]
pub const fn replace_addr(check: u16, from: [u8; 4], to: [u8; 4]) -> u16 {
    let c = replace16(check, u16::from_ne_bytes([from[0], from[1]]), u16::from_ne_bytes([to[0], to[1]]));
    replace16(c, u16::from_ne_bytes([from[2], from[3]]), u16::from_ne_bytes([to[2], to[3]]))
}

/// The same for a port, given in host order as the flow keys hold it.
#[inline(always)]
pub const fn replace_port(check: u16, from: u16, to: u16) -> u16 {
    replace16(check, from.to_be(), to.to_be())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// The checksum of `bytes` computed from scratch, as stored in memory.
    fn full(bytes: &[u8]) -> u16 {
        let sum: u32 = bytes.chunks(2).map(|c| u16::from_ne_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
        !fold(sum)
    }

    #[test]
    fn incremental_updates_match_a_full_recompute() {
        // An IPv4 header with its checksum at 10..12; rewrite both addresses
        // and a 16-bit word, then compare with a recompute.
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..10_000 {
            let mut h: Vec<u8> = (0..20).map(|_| next() as u8).collect();
            h[10] = 0;
            h[11] = 0;
            let c = full(&h);
            h[10..12].copy_from_slice(&c.to_ne_bytes());
            let (old_src, new_src): ([u8; 4], [u8; 4]) = (h[12..16].try_into().unwrap(), next().to_ne_bytes());
            let (old_w, new_w) = (u16::from_be_bytes([h[8], h[9]]), next() as u16);
            let mut check = u16::from_ne_bytes([h[10], h[11]]);
            check = replace_addr(check, old_src, new_src);
            check = replace_port(check, old_w, new_w);
            h[12..16].copy_from_slice(&new_src);
            h[8..10].copy_from_slice(&new_w.to_be_bytes());
            h[10..12].copy_from_slice(&check.to_ne_bytes());
            assert_eq!(full(&h), 0, "header no longer sums to zero");
        }
    }
}
