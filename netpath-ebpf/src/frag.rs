//! IPv4 fragments through NAT, the way Cilium's fragment map does it: the
//! first piece carries the transport header, so its ports are remembered
//! under (addresses, IP identification, protocol) as it passes, and the
//! later pieces, which carry none, are matched to their connection by that
//! key. The first piece's transport checksum covers the whole datagram, so
//! translating ports and addresses there and only addresses in the later
//! pieces leaves the reassembled datagram consistent.
use netpath_common::{FragKey, FragPorts};

use crate::{maps::FRAGS, packet::Packet};

#[inline(always)]
const fn v4(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[inline(always)]
fn key(p: &Packet) -> FragKey {
    FragKey {
        saddr: v4(p.key.saddr),
        daddr: v4(p.key.daddr),
        id: p.ip_id as u32,
        proto: p.key.proto,
        family: 4,
        _pad: [0; 2],
    }
}

/// Remembers the ports of `p`, a first fragment, for the pieces to come (a
/// later datagram with the same identification replaces it).
#[inline(always)]
pub fn remember(p: &Packet) {
    let _ = FRAGS.insert(key(p), FragPorts { sport: p.key.sport, dport: p.key.dport }, 0);
}

/// The ports of the datagram `p` (a later fragment) is part of.
#[inline(always)]
pub fn ports(p: &Packet) -> Option<FragPorts> {
    // SAFETY: the value is copied out immediately.
    unsafe { FRAGS.get(key(p)) }.copied()
}
