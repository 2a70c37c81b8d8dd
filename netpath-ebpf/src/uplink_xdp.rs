//! XDP on the uplinks: the common case of `from_uplink` done before the
//! kernel builds anything for the packet. TCP and UDP that belong to a
//! translated connection into a sandbox — replies to masqueraded
//! connections, connections to published ports, new ones included — are
//! translated here and redirected to the sandbox's veth. Everything else
//! (ICMP, IP options, fragments, traffic for the host, targets that cannot
//! take XDP frames) passes up untouched to the TC programs, which own every
//! policy decision and count what they drop.
//!
//! Parsing, conntrack and rewriting are the TC programs' own code, through
//! the context layer (`ctx.rs`).
use aya_ebpf::{bindings::xdp_action::XDP_REDIRECT, helpers::generated::bpf_redirect, programs::XdpContext};
use netpath_common::{Endpoint, FlowKey, Reason, ct_flags, endpoint_flags::XDP_TARGET};

use crate::{
    conntrack,
    ctx::Ctx,
    maps, nat,
    packet::{Frag, IP_OFF, IPV4_HLEN, Kind, Parsed, parse},
    publish,
    stats::{self, Verdict},
};

type V = Verdict<u32>;

#[inline(always)]
fn pass(reason: Reason) -> V {
    stats::pass::<XdpContext>(reason)
}

/// The sandbox behind `addr`, if XDP may hand it frames.
#[inline(always)]
fn xdp_target(addr: [u8; 4]) -> Option<&'static Endpoint> {
    maps::endpoint(addr).filter(|ep| ep.flags & XDP_TARGET != 0)
}

#[inline(always)]
pub fn from_uplink(ctx: &XdpContext) -> V {
    let p = match parse(ctx) {
        Parsed::Ipv4(p) => p,
        Parsed::NotIpv4 => return pass(Reason::PassNotIpv4),
        // TC drops it and counts why.
        Parsed::Malformed => return pass(Reason::PassToTc),
    };
    // TCP and UDP without IP options, whole, and not expiring here (the
    // kernel answers those with time exceeded): the rest is TC's.
    if !matches!(p.kind, Kind::Tcp | Kind::Udp) || p.frag != Frag::Whole || p.l4_off != IP_OFF + IPV4_HLEN || p.ttl <= 1
    {
        return pass(Reason::PassToTc);
    }
    let cfg = maps::config();
    let now = conntrack::now();
    let (to, dst, reason) = if let Some(entry) = conntrack::lookup(ctx, &p.key, &p, &cfg, now) {
        let Some(dst) = xdp_target(entry.rewrite.daddr) else {
            return pass(Reason::PassToTc);
        };
        (entry.rewrite, dst, Reason::Nat)
    } else {
        let Some(target) = publish::arriving(ctx.raw(), ctx.ifindex(), &p.key, cfg.published_range_count) else {
            return pass(Reason::PassNotOurs);
        };
        let Some(dst) = xdp_target(target.addr) else {
            return pass(Reason::PassToTc);
        };
        let to = FlowKey { daddr: target.addr, dport: target.port, ..p.key };
        match conntrack::open_with_port(&p, to, ct_flags::DNAT, now, false) {
            Ok(to) => (to, dst, Reason::DnatNew),
            // Let TC refuse it and count why.
            Err(_) => return pass(Reason::PassToTc),
        }
    };
    let gateway_mac = maps::network(dst.network_id).map(|n| n.gateway_mac).unwrap_or_default();
    if nat::rewrite(ctx, &p, &to).is_err()
        || nat::decrement_ttl(ctx, &p).is_err()
        || nat::set_macs(ctx, &dst.mac, &gateway_mac).is_err()
    {
        return stats::drop::<XdpContext>(Reason::DropWriteFailed);
    }
    // SAFETY: plain helper call with scalar arguments.
    let action = unsafe { bpf_redirect(dst.host_ifindex, 0) } as u32;
    if action == XDP_REDIRECT {
        Verdict::new(reason, action)
    } else {
        stats::drop::<XdpContext>(Reason::DropRedirectFailed)
    }
}
