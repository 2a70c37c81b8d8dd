//! The overlay's tunnel, as Cilium drives it: one `collect_md` VXLAN device
//! per host carries every overlay network; the program says per packet
//! where it goes (`bpf_skb_set_tunnel_key`: remote VTEP and VNI) and hands
//! it to the device, which builds the outer headers. On the way in, the
//! device strips them and leaves the VNI and the sender's VTEP as the
//! packet's tunnel metadata.
use aya_ebpf::{
    bindings::{BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::generated::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    programs::TcContext,
};

use netpath_common::{IPPROTO_UDP, VXLAN_PORT};

use crate::{
    ctx::Ctx,
    maps::UPLINKS,
    packet::{ETH_P_IP, EthHdr, IP_FRAG_MASK, IP_OFF, IPV4_HLEN, Ipv4Hdr},
    route::TC_ACT_REDIRECT,
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
    // SAFETY: value compared immediately.
    unsafe { UPLINKS.get(ifindex) }.is_some_and(|u| u.addr == ip.saddr)
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
