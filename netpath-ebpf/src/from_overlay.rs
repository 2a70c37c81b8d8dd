//! What other hosts' sandboxes send to sandboxes of this host, stripped of
//! its outer headers: by the uplink itself (`uplink::from_uplink`, the
//! common case) or by the VXLAN device, whose TC ingress runs `run`. Both
//! then decide the same way, in `deliver`.
//!
//! Only what a remote host's own checks let through is believed: the VNI
//! must be an overlay network of this host, the inner source a sandbox of
//! that VNI living at the very VTEP that sent the packet (so neither a
//! forged source nor a host that left gets in), the inner destination a
//! sandbox of that network here. ICC off holds across hosts (no `--link`
//! reaches across). Then the packet goes straight into the sandbox.
use aya_ebpf::programs::TcContext;
use netpath_common::{Reason, endpoint_flags};

use crate::{
    maps,
    packet::{Parsed, ethernet_addrs, parse_l3},
    route,
    stats::tc::{V, drop},
    tunnel,
};

/// TC ingress of the VXLAN device: the tunnel metadata it left says where
/// the packet came from.
#[inline(always)]
pub fn run(ctx: &TcContext) -> V {
    let Some(tun) = tunnel::key(ctx) else {
        return drop(Reason::DropOverlayUnknownVni);
    };
    let Some(network_id) = maps::network_of_vni(tun.vni) else {
        return drop(Reason::DropOverlayUnknownVni);
    };
    let Some((eth_dst, eth_src)) = ethernet_addrs(ctx) else {
        return drop(Reason::DropMalformed);
    };
    deliver(ctx, &tun, network_id, &eth_dst, &eth_src)
}

/// Checks a decapsulated frame (inner Ethernet header at offset 0) that
/// arrived in `tun`, of local overlay network `network_id` (the VNI's),
/// and delivers it into its sandbox. The caller has already looked the
/// VNI up and read the inner Ethernet addresses (`from_uplink` before the
/// strip), so neither is done twice.
#[inline(always)]
pub fn deliver(ctx: &TcContext, tun: &tunnel::TunnelKey, network_id: u32, eth_dst: &[u8; 6], eth_src: &[u8; 6]) -> V {
    let p = match parse_l3(ctx) {
        Parsed::Ipv4(p) => p,
        Parsed::NotIpv4 => return drop(Reason::DropOverlayNotIpv4),
        Parsed::Malformed => return drop(Reason::DropMalformed),
    };
    // The inner source must be the remote sandbox, from its MAC.
    let Some(src) = maps::remote_endpoint(tun.vni, p.key.saddr) else {
        return drop(Reason::DropOverlaySpoofedSource);
    };
    if src.vtep_ipv4() != tun.remote || *eth_src != src.mac {
        return drop(Reason::DropOverlaySpoofedSource);
    }
    let Some(dst) = maps::endpoint(p.key.daddr).filter(|d| d.network_id == network_id) else {
        return drop(Reason::DropOverlayUnknownDestination);
    };
    if dst.flags & endpoint_flags::NO_ICC != 0 {
        return drop(Reason::DropIcc);
    }
    route::to_sandbox(ctx, eth_dst, dst, Reason::Decapsulated)
}
