//! Masquerade: a new connection from a sandbox leaving through an uplink
//! takes the network's SNAT address, or the uplink's own, as its source.
//! Decided where the packet is first known to leave by an uplink: on the
//! sandbox's veth when the data path routes it (`fib.rs`), else on the
//! uplink's egress after the kernel did.
use netpath_common::{FlowKey, NetworkPolicy, Reason, ct_flags, network_flags};

use crate::{
    conntrack::{self, Refused},
    packet::Packet,
};

pub enum Masquerade {
    /// Recorded; the packet leaves as this.
    Translate(FlowKey),
    /// Left as it is, for this reason.
    Leave(Reason),
    Refused(Refused),
}

/// Masquerades the first packet `p` of a connection from a sandbox of `net`
/// leaving by an uplink whose address is `uplink_addr` (zero: none known).
#[inline(always)]
pub fn open(p: &Packet, net: &NetworkPolicy, uplink_addr: [u8; 4], now: u64) -> Masquerade {
    if net.flags & network_flags::MASQUERADE == 0 {
        return Masquerade::Leave(Reason::PassMasqueradeOff);
    }
    // An address, not an Option of the map value: on the path that returns
    // early LLVM spilled the Option's undefined payload, which the verifier
    // refuses.
    let nat_addr = if net.snat_addr != [0; 4] { net.snat_addr } else { uplink_addr };
    if nat_addr == [0; 4] {
        return Masquerade::Leave(Reason::PassNoUplinkAddress);
    }
    let to = FlowKey { saddr: nat_addr, ..p.key };
    match conntrack::open_with_port(p, to, ct_flags::SNAT, now, true) {
        Ok(to) => Masquerade::Translate(to),
        Err(refused) => Masquerade::Refused(refused),
    }
}
