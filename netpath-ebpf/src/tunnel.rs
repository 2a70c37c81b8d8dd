//! The overlay's tunnel, as Cilium drives it: one `collect_md` VXLAN device
//! per host carries every overlay network; the program says per packet
//! where it goes (`bpf_skb_set_tunnel_key`: remote VTEP and VNI) and hands
//! it to the device, which builds the outer headers.
//!
//! On the way in, the uplink strips the outer headers itself when the
//! packet is shaped as netpath's own encapsulation sends it (`arriving`,
//! `decapsulate`): that spares the kernel's UDP receive, the VXLAN device
//! and a second pass through the stack (GRO cells) for every packet. What
//! it leaves alone (an outer checksum to verify, IP options, a strip the
//! kernel refuses) the VXLAN device decapsulates, leaving the VNI and the
//! sender's VTEP as the packet's tunnel metadata (`key`). Either way the
//! same checks decide (`from_overlay::deliver`).
use aya_ebpf::{
    bindings::{
        BPF_CSUM_LEVEL_DEC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_ADJ_ROOM_NO_CSUM_RESET,
        BPF_F_ZERO_CSUM_TX, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_tunnel_key,
    },
    helpers::generated::{
        bpf_csum_level, bpf_redirect, bpf_skb_adjust_room, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key,
    },
    programs::TcContext,
};

use netpath_common::{IPPROTO_UDP, Reason, VXLAN_PORT};

use crate::{
    ctx::Ctx,
    maps::{self, UPLINKS},
    packet::{ETH_HLEN, ETH_P_IP, EthHdr, IP_FRAG_MASK, IP_OFF, IPV4_HLEN, Ipv4Hdr},
    route::TC_ACT_REDIRECT,
    stats::tc::{V, drop, pass},
};

/// The outer IPv4 TTL of encapsulated packets.
const TUNNEL_TTL: u8 = 64;

/// What the VXLAN device recorded about an arriving packet.
pub struct TunnelKey {
    pub vni: u32,
    /// The sending host's VTEP, network order.
    pub remote: [u8; 4],
}

/// Sends the packet to `vtep` (network-order IPv4) in `vni` through the
/// VXLAN device `tunnel_ifindex`. `None` when the metadata or the redirect
/// was refused.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, vni: u32, vtep: [u8; 4], tunnel_ifindex: u32) -> Option<i32> {
    // SAFETY: all-zero is a valid bpf_tunnel_key.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    // The helper takes the address in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(vtep);
    key.tunnel_ttl = TUNNEL_TTL;
    // No outer UDP checksum (allowed for IPv4, RFC 7348): the inner packet
    // carries its own, and computing one for every packet is pure cost.
    let flags = u64::from(BPF_F_ZERO_CSUM_TX);
    let size = core::mem::size_of::<bpf_tunnel_key>() as u32;
    // SAFETY: `key` lives on the stack for the duration of the call.
    if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, size, flags) } < 0 {
        return None;
    }
    // SAFETY: plain helper call with scalar arguments.
    let action = unsafe { bpf_redirect(tunnel_ifindex, 0) } as i32;
    (action == TC_ACT_REDIRECT).then_some(action)
}

/// Whether a frame leaving uplink `ifindex` is this host's own VXLAN
/// traffic: a whole UDP datagram to the VXLAN port from the uplink's own
/// address (the VTEP), as the VXLAN device sends every overlay packet.
/// Nothing on the uplink translates it (every connection it tracks leaving
/// an uplink has a sandbox's source), so the caller lets it go without
/// parsing it further or looking it up. Direct reads only; the one map
/// lookup is for datagrams to the VXLAN port.
#[inline(always)]
pub fn is_own_vxlan(ctx: &TcContext, ifindex: u32) -> bool {
    let (Some(eth), Some(ip)) = (ctx.ptr_at::<EthHdr>(0), ctx.ptr_at::<Ipv4Hdr>(IP_OFF)) else {
        return false;
    };
    // The UDP header's ports, right after an option-less IPv4 header.
    let Some(ports) = ctx.ptr_at::<[u16; 2]>(IP_OFF + IPV4_HLEN) else {
        return false;
    };
    // SAFETY: ptr_at checked that each header lies within the packet.
    let (eth, ip, ports) = unsafe { (&*eth, &*ip, *ports) };
    if u16::from_be(eth.proto_be) != ETH_P_IP
        || ip.version_ihl != 0x45
        || ip.protocol != IPPROTO_UDP
        || u16::from_be(ip.frag_off_be) & IP_FRAG_MASK != 0
        || u16::from_be(ports[1]) != VXLAN_PORT
    {
        return false;
    }
    is_uplink_addr(ifindex, ip.saddr)
}

/// The tunnel metadata of a packet that arrived on the VXLAN device.
#[inline(always)]
pub fn key(ctx: &TcContext) -> Option<TunnelKey> {
    // SAFETY: all-zero is a valid bpf_tunnel_key.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    let size = core::mem::size_of::<bpf_tunnel_key>() as u32;
    // SAFETY: as above.
    if unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size, 0) } < 0 {
        return None;
    }
    // SAFETY: the IPv4 member, as asked for with flags 0.
    let remote = unsafe { key.__bindgen_anon_1.remote_ipv4 };
    Some(TunnelKey { vni: key.tunnel_id, remote: remote.to_be_bytes() })
}

/// RFC 7348's VXLAN header: flags (the I bit, the rest reserved), then the
/// 24-bit VNI and a reserved byte. Bytes, so that `Outer` has no padding.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VxlanHdr {
    pub flags: [u8; 4],
    pub vni: [u8; 4],
}

/// The "VNI present" flag, the only one RFC 7348 defines.
const VXLAN_FLAG_I: u8 = 0x08;
const UDP_HLEN: usize = 8;
const VXLAN_HLEN: usize = 8;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub sport_be: u16,
    pub dport_be: u16,
    pub len_be: u16,
    pub check: u16,
}

/// A VXLAN packet as netpath's encapsulation sends it, up to the inner
/// Ethernet header: an option-less outer IPv4 header.
#[repr(C)]
pub struct Outer {
    pub eth: EthHdr,
    pub ip: Ipv4Hdr,
    pub udp: UdpHdr,
    pub vxlan: VxlanHdr,
    pub inner: EthHdr,
}

/// What the strip removes behind the outer Ethernet header: outer IPv4,
/// UDP, VXLAN and the inner Ethernet header, whose addresses and type are
/// then written over the outer one (`bpf_skb_adjust_room` keeps the MAC
/// header in place and removes what follows it).
const STRIPPED: usize = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;

/// `BPF_F_ADJ_ROOM_DECAP_L4_UDP` of include/uapi/linux/bpf.h (1 << 10), not
/// in aya-ebpf 0.2's bindings: on a decapsulation, also clears the UDP
/// tunnel GSO type and `skb->encapsulation`, as the VXLAN device does
/// (`iptunnel_pull_offloads`). Kernels that predate it refuse the flags
/// with EINVAL before touching the packet.
const BPF_F_ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;
const EINVAL: i64 = 22;
/// `skb->pkt_type` of a frame addressed to this host's MAC.
const PACKET_HOST: u32 = 0;

/// What the uplink makes of an arriving packet, as far as the overlay goes.
pub enum Arrival {
    /// Not VXLAN of an overlay network of this host: the uplink's usual
    /// path, exactly as before.
    Other,
    /// VXLAN for this host that the uplink settles as it is.
    Settled(V),
    /// VXLAN for this host in the shape netpath's encapsulation sends:
    /// strip it (`decapsulate`) and deliver it as `key` says.
    /// `network_id` is the local overlay network of the VNI, looked up
    /// once here for the delivery.
    Decapsulate { key: TunnelKey, network_id: u32, inner: EthHdr },
}

/// Whether `addr` (network order) is the address of uplink `ifindex`, the
/// VTEP other hosts tunnel to.
#[inline(always)]
fn is_uplink_addr(ifindex: u32, addr: [u8; 4]) -> bool {
    // SAFETY: value compared immediately.
    unsafe { UPLINKS.get(ifindex) }.is_some_and(|u| u.addr == addr)
}

/// Classifies a frame arriving on uplink `ifindex`. Direct reads only; the
/// map lookups are for UDP datagrams to this host's VXLAN port. Fragments
/// are `Other`: the NAT path remembers a first piece's ports for the later
/// ones (and the kernel reassembles them for the VXLAN device), as before.
#[inline(always)]
pub fn arriving(ctx: &TcContext, ifindex: u32) -> Arrival {
    let (Some(eth), Some(ip)) = (ctx.ptr_at::<EthHdr>(0), ctx.ptr_at::<Ipv4Hdr>(IP_OFF)) else {
        return Arrival::Other;
    };
    // SAFETY: ptr_at checked that both headers lie within the packet.
    let (eth, ip) = unsafe { (&*eth, &*ip) };
    if u16::from_be(eth.proto_be) != ETH_P_IP
        || ip.protocol != IPPROTO_UDP
        || ip.version_ihl >> 4 != 4
        || u16::from_be(ip.frag_off_be) & IP_FRAG_MASK != 0
    {
        return Arrival::Other;
    }
    // SAFETY: the context pointer is valid for the whole program run.
    // Another host's frame (a promiscuous uplink): ip_rcv would drop it.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        return Arrival::Other;
    }
    if ip.version_ihl != 0x45 {
        // Options shift the UDP header; rare enough for the device.
        // (A header length under 20 is the NAT path's to drop as malformed.)
        let ihl = (ip.version_ihl & 0x0f) as usize * 4;
        let dport = Ctx::load::<u16>(ctx, IP_OFF + ihl + 2).map(u16::from_be);
        if ihl > IPV4_HLEN && dport == Some(VXLAN_PORT) && is_uplink_addr(ifindex, ip.daddr) {
            return Arrival::Settled(pass(Reason::PassOverlayToKernel));
        }
        return Arrival::Other;
    }
    let Some(ports) = ctx.ptr_at::<[u16; 2]>(IP_OFF + IPV4_HLEN) else {
        return Arrival::Other;
    };
    // SAFETY: as above.
    if u16::from_be(unsafe { (*ports)[1] }) != VXLAN_PORT || !is_uplink_addr(ifindex, ip.daddr) {
        return Arrival::Other;
    }
    let Some(outer) = ctx.ptr_at::<Outer>(0) else {
        // Cut inside the UDP, VXLAN or inner Ethernet header: nothing any
        // VXLAN device could decapsulate. Longer but not linear: the device's.
        return Arrival::Settled(if (ctx.len() as usize) < core::mem::size_of::<Outer>() {
            drop(Reason::DropMalformed)
        } else {
            pass(Reason::PassOverlayToKernel)
        });
    };
    // SAFETY: ptr_at checked that the headers lie within the packet.
    let outer = unsafe { &*outer };
    let udp = outer.udp;
    let vx = outer.vxlan;
    let vni = u32::from_be_bytes([0, vx.vni[0], vx.vni[1], vx.vni[2]]);
    // A VNI of no overlay network here is someone else's VXLAN (or a
    // stray): the kernel's, as before; netpath's device drops it.
    let Some(network_id) = maps::network_of_vni(vni) else {
        return Arrival::Other;
    };
    if udp.check != 0 {
        return Arrival::Settled(pass(Reason::PassOverlayChecksum));
    }
    if vx.flags != [VXLAN_FLAG_I, 0, 0, 0] || vx.vni[3] != 0 {
        return Arrival::Settled(drop(Reason::DropOverlayBadVxlan));
    }
    // The outer header checksum, which ip_rcv verifies and nothing after
    // the strip could.
    if !header_checksum_ok(&outer.ip) {
        return Arrival::Settled(drop(Reason::DropMalformed));
    }
    // Lengths as ip_rcv and udp_rcv hold them: the IPv4 total covers the
    // headers and lies within the frame (Ethernet padding may follow), the
    // UDP length within that. A UDP length short of the IPv4 payload is
    // legal (the kernel trims the rest): the device's.
    let tot = u16::from_be(outer.ip.tot_len_be) as usize;
    let udp_len = u16::from_be(udp.len_be) as usize;
    if tot < STRIPPED
        || IP_OFF + tot > ctx.len() as usize
        || udp_len < STRIPPED - IPV4_HLEN
        || udp_len > tot - IPV4_HLEN
    {
        return Arrival::Settled(drop(Reason::DropMalformed));
    }
    if udp_len != tot - IPV4_HLEN {
        return Arrival::Settled(pass(Reason::PassOverlayToKernel));
    }
    Arrival::Decapsulate { key: TunnelKey { vni, remote: outer.ip.saddr }, network_id, inner: outer.inner }
}

/// Whether an option-less IPv4 header's checksum holds: its ten 16-bit
/// words, checksum included, sum to all ones (RFC 1071).
#[inline(always)]
fn header_checksum_ok(ip: &Ipv4Hdr) -> bool {
    // SAFETY: Ipv4Hdr is 20 bytes of plain data, 2-aligned.
    let words = unsafe { &*(ip as *const Ipv4Hdr).cast::<[u16; IPV4_HLEN / 2]>() };
    let mut sum = 0u32;
    for w in words {
        sum += u32::from(*w);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// Why a decapsulation did not happen.
pub enum Strip {
    /// The kernel refused the strip; the packet is as it arrived.
    Refused,
    /// Stripped, but the inner Ethernet header could not be written.
    WriteFailed,
}

/// Strips the outer headers of a packet `arriving` classified, leaving the
/// inner frame `inner` heads. GSO super-packets stay GSO: the inner MSS is
/// unchanged (`FIXED_GSO`). The outer UDP checksum was zero, which the
/// kernel's UDP receive counts as one checksum level validated
/// (`__skb_checksum_validate_needed`); the strip keeps the level a device
/// reported (`NO_CSUM_RESET`) and drops that one, so the inner transport
/// checksum stays exactly as verified as on the kernel's path.
#[inline(always)]
pub fn decapsulate(ctx: &TcContext, inner: &EthHdr) -> Result<(), Strip> {
    let flags = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4 | BPF_F_ADJ_ROOM_NO_CSUM_RESET);
    let len_diff = -(STRIPPED as i32);
    // SAFETY: plain helper calls with scalar arguments.
    let mut ret =
        unsafe { bpf_skb_adjust_room(ctx.skb.skb, len_diff, BPF_ADJ_ROOM_MAC, flags | BPF_F_ADJ_ROOM_DECAP_L4_UDP) };
    if ret == -EINVAL {
        // A kernel without BPF_F_ADJ_ROOM_DECAP_L4_UDP (6.18 has none):
        // the super-packet keeps its UDP tunnel GSO type and the
        // encapsulation mark. Delivery into the sandbox's own sockets
        // ignores both; see docs/bench/decap.md for the rest.
        // SAFETY: as above.
        ret = unsafe { bpf_skb_adjust_room(ctx.skb.skb, len_diff, BPF_ADJ_ROOM_MAC, flags) };
    }
    if ret != 0 {
        return Err(Strip::Refused);
    }
    // SAFETY: as above.
    unsafe { bpf_csum_level(ctx.skb.skb, u64::from(BPF_CSUM_LEVEL_DEC)) };
    Ctx::store(ctx, 0, inner).map_err(|_| Strip::WriteFailed)
}
