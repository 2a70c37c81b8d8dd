//! TC ingress of the VXLAN device: what other hosts' sandboxes send to
//! sandboxes of this host, already stripped of its outer headers.
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
    ctx::Ctx,
    maps,
    packet::{EthHdr, Parsed, ethernet, parse_l3},
    route::{self, TC_ACT_REDIRECT},
    stats::{
        Verdict,
        tc::{V, drop},
    },
    tunnel,
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> V {
    let Some(tun) = tunnel::key(ctx) else {
        return drop(Reason::DropOverlayUnknownVni);
    };
    let Some(network_id) = maps::network_of_vni(tun.vni) else {
        return drop(Reason::DropOverlayUnknownVni);
    };
    let p = match parse_l3(ctx) {
        Parsed::Ipv4(p) => p,
        Parsed::NotIpv4 => return drop(Reason::DropOverlayNotIpv4),
        Parsed::Malformed => return drop(Reason::DropMalformed),
    };
    let Some(src) = maps::remote_endpoint(tun.vni, p.key.saddr) else {
        return drop(Reason::DropOverlaySpoofedSource);
    };
    if src.vtep_ipv4() != tun.remote || !ethernet(ctx).is_some_and(|(mac, _)| mac == src.mac) {
        return drop(Reason::DropOverlaySpoofedSource);
    }
    let Some(dst) = maps::endpoint(p.key.daddr).filter(|d| d.network_id == network_id) else {
        return drop(Reason::DropOverlayUnknownDestination);
    };
    if dst.flags & endpoint_flags::NO_ICC != 0 {
        return drop(Reason::DropIcc);
    }
    let Some(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return drop(Reason::DropMalformed);
    };
    // SAFETY: ptr_at checked the header lies within the packet.
    if unsafe { (*eth).dst } != dst.mac && Ctx::store(ctx, 0, &dst.mac).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    let action = route::into_sandbox(dst);
    if action == TC_ACT_REDIRECT {
        Verdict::new(Reason::Decapsulated, action)
    } else {
        drop(Reason::DropRedirectFailed)
    }
}
