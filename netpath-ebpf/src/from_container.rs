//! TC ingress of every sandbox's host-side veth: what a sandbox sends.
//!
//! - Nothing leaves a sandbox under another's name: IPv4 must come from the
//!   sandbox's own address, every frame from its own MAC, ARP must name the
//!   sandbox as sender (so no neighbour table or bridge FDB learns a lie);
//!   IPv6 (no network has it yet) and other protocols are dropped.
//! - Traffic to a sandbox of the same network is handed straight to it
//!   (`bpf_redirect_peer`), skipping the bridge.
//! - Tracked connections whose translated destination is a sandbox on this
//!   host (hairpin through a published port, and its replies) are translated
//!   and delivered here too.
//! - New connections from a sandbox to a published port of this host are
//!   DNATed here (hairpin); to itself, also SNATed to the gateway, since a
//!   sandbox drops packets that claim to come from its own address.
//! - Traffic to a sandbox of the same overlay network on another host is
//!   encapsulated to that host (see `tunnel.rs`), ARP for such a sandbox is
//!   answered here (`arp.rs`); the same ICC rule applies as at home.
//! - `--internal` networks lose everything leaving their subnet.
//! - Everything for beyond this host that the FIB routes out of an uplink is
//!   translated (its connection's rewrite, or masquerade for a new one),
//!   forwarded and redirected there by the data path itself (`fib.rs`), so it
//!   never passes netfilter's FORWARD hook, and the uplink's egress only
//!   counts the verdict handed over (`handoff.rs`). Everything else goes the
//!   kernel's way, and is masqueraded on the uplink's egress.
use aya_ebpf::programs::TcContext;
use netpath_common::{
    CtEntry, Endpoint, FlowKey, NetworkPolicy, Reason, RemoteEndpoint, ct_flags, endpoint_flags, network_flags,
};

use crate::{
    arp, conntrack,
    ctx::Ctx,
    fib::{self, Egress},
    handoff, maps,
    masquerade::{self, Masquerade},
    nat,
    packet::{
        ArpHdr, ETH_P_ARP, ETH_P_IPV6, Kind, Packet, Parsed, arp_ipv4, ethernet, ethernet_addrs, parse_l3, parse_l4,
    },
    route::{self, TC_ACT_REDIRECT},
    stats::{self, Verdict},
    tunnel,
};

use crate::stats::tc::{V, drop, pass};

#[inline(always)]
pub fn run(ctx: &TcContext) -> V {
    let ifindex = ctx.ifindex();
    let mut p = match parse_l3(ctx) {
        Parsed::Ipv4(p) => p,
        Parsed::NotIpv4 => return not_ipv4(ctx, ifindex),
        Parsed::Malformed => return drop(Reason::DropMalformed),
    };
    // The source must be the sandbox behind this very veth, so that a
    // sandbox cannot borrow another's address to reach past its network, to
    // leave un-NATed, or to have replies sent to a sibling.
    let Some(src) = maps::endpoint(p.key.saddr).filter(|src| src.host_ifindex == ifindex) else {
        return drop(Reason::DropSpoofedSource);
    };
    // ... and from its own MAC, so the bridge never learns another's. (The
    // header's one read here: its destination is what delivery checks.)
    let Some(eth_dst) = dst_mac_if_from(ctx, &src.mac) else {
        return drop(Reason::DropSpoofedMac);
    };
    let dst = maps::endpoint(p.key.daddr);
    // The fast path: a neighbour on the same network, and no connection of
    // ours that could need translating (two lookups, no transport parsing).
    if let Some(dst) = dst.filter(|d| d.network_id == src.network_id) {
        if src.flags & endpoint_flags::HAIRPIN_TARGET == 0 {
            return neighbour(ctx, &eth_dst, &p, src, dst);
        }
    }
    // A neighbour on the same overlay network, on another host. Nothing of
    // ours translates between sandboxes of one network, so conntrack has no
    // say here either.
    if dst.is_none() {
        if let Some(ov) = maps::overlay(src.network_id) {
            if let Some(remote) = maps::remote_endpoint(ov.vni, p.key.daddr) {
                return to_remote(ctx, &eth_dst, &p, src, remote, ov.vni, ov.tunnel_ifindex);
            }
        }
    }
    if !parse_l4(ctx, &mut p) {
        return drop(Reason::DropMalformed);
    }
    let cfg = maps::config();
    let now = conntrack::now();
    if p.kind != Kind::Other {
        if let Some(entry) = conntrack::lookup(ctx, &p.key, &p, &cfg, now) {
            return tracked(ctx, &p, &entry);
        }
    }
    if let Some(dst) = dst {
        if src.network_id != dst.network_id {
            return drop(Reason::DropOtherNetwork);
        }
        return neighbour(ctx, &eth_dst, &p, src, dst);
    }
    let net = maps::network(src.network_id);
    // An address of another overlay network (whose sandboxes may live on
    // any host): isolated as a local network's sandbox is, just above, and
    // like it only for packets no connection of ours carries (a tracked
    // flow's first packet passed here). Its gateway is this host's own
    // address, reachable as with bridges.
    // An address of the sender's own overlay network reaching here is held
    // by no sandbox anywhere (a remote one was tunnelled above): the
    // kernel would only route it into the bridge, where nobody answers.
    // The subnet's gateway and broadcast addresses still go the bridge's
    // way. The sender's own network is the policy looked up just above.
    if let Some(owner) = maps::overlay_subnet(p.key.daddr) {
        if owner != src.network_id {
            if maps::network(owner).is_none_or(|n| n.gateway != p.key.daddr) {
                return drop(Reason::DropOtherNetwork);
            }
        } else if net.is_some_and(|n| n.gateway != p.key.daddr && !is_broadcast(&n, p.key.daddr)) {
            return drop(Reason::DropOverlayNoEndpoint);
        }
    }
    let Some(net) = net else {
        return pass(Reason::PassNoNetwork);
    };
    if matches!(p.kind, Kind::Tcp | Kind::Udp) {
        if let Some(target) = crate::publish::find(&p.key, cfg.published_range_count) {
            if p.key.daddr == net.gateway || route::is_local(ctx.raw(), ifindex, p.key.saddr, p.key.daddr) {
                return hairpin(ctx, &p, &net, target.addr, target.port, now);
            }
        }
    }
    if net.flags & network_flags::INTERNAL != 0 && !in_subnet(&net, p.key.daddr) {
        return drop(Reason::DropInternalNetwork);
    }
    if net.flags & network_flags::NO_ICC != 0 && in_subnet(&net, p.key.daddr) && p.key.daddr != net.gateway {
        // Not an endpoint of ours, yet on the network: nothing to reach.
        return drop(Reason::DropIcc);
    }
    routed(ctx, &p, Reason::PassRouted, Leaving::New(&net, now))
}

/// Whose verdict a packet for beyond this host still needs: the uplink's
/// egress would decide it there, but it is parsed and its connection looked
/// up here already.
enum Leaving<'a> {
    /// A tracked connection's: translated as its entry says.
    Tracked(&'a CtEntry),
    /// No connection's yet: masqueraded if its network says so.
    New(&'a NetworkPolicy, u64),
}

/// A packet for beyond this host: when the FIB routes it out of an uplink,
/// translated here and redirected there by the data path itself, with the
/// verdict for the uplink's egress handed over (so it is parsed and looked
/// up once); else the kernel's forwarding, counted as `fallback`, and
/// translated on the uplink's egress.
#[inline(always)]
fn routed(ctx: &TcContext, p: &Packet, fallback: Reason, leaving: Leaving) -> V {
    let Some(hop) = fib::uplink_hop(ctx, p) else {
        return pass(fallback);
    };
    // ICMP errors (whose quote is translated) and what NAT does not know
    // are the uplink's egress to judge; so is all when the mark is taken.
    let handover = match p.kind {
        Kind::IcmpError | Kind::Other => None,
        _ if !handoff::free(ctx) => None,
        _ => match leaving {
            Leaving::Tracked(entry) => Some((Some(entry.rewrite), nat::tracked_reason(p))),
            Leaving::New(net, now) => match masquerade::open(p, net, hop.uplink.addr, now) {
                Masquerade::Translate(to) => Some((Some(to), Reason::SnatNew)),
                Masquerade::Leave(reason) => Some((None, reason)),
                Masquerade::Refused(refused) => return stats::refused::<TcContext>(refused),
            },
        },
    };
    if let Some((Some(to), _)) = &handover {
        if nat::rewrite(ctx, p, to).is_err() {
            return drop(Reason::DropWriteFailed);
        }
    }
    match fib::forward(ctx, p, &hop) {
        Egress::Redirected(TC_ACT_REDIRECT) => {
            if let Some((_, reason)) = handover {
                handoff::give(ctx, reason);
            }
            Verdict::new(Reason::RedirectUplink, TC_ACT_REDIRECT)
        }
        Egress::Redirected(_) => drop(Reason::DropRedirectFailed),
        Egress::WriteFailed => drop(Reason::DropWriteFailed),
    }
}

/// The frame's destination MAC, if the frame comes from `mac`.
#[inline(always)]
fn dst_mac_if_from(ctx: &TcContext, mac: &[u8; 6]) -> Option<[u8; 6]> {
    ethernet_addrs(ctx).filter(|(_, src)| src == mac).map(|(dst, _)| dst)
}

/// A frame without IPv4: checked against the endpoint behind the veth.
/// ARP goes on to the bridge when it speaks for the sandbox itself (an
/// address probe, sender 0.0.0.0, included: duplicate address detection);
/// IPv6 and anything else is dropped, as no network has IPv6 yet.
#[inline(always)]
fn not_ipv4(ctx: &TcContext, ifindex: u32) -> V {
    let Some((addr, ep)) = maps::veth_endpoint(ifindex) else {
        return drop(Reason::DropUnknownVeth);
    };
    let Some((src_mac, proto)) = ethernet(ctx) else {
        return drop(Reason::DropMalformed);
    };
    if src_mac != ep.mac {
        return drop(Reason::DropSpoofedMac);
    }
    match proto {
        ETH_P_ARP => match arp_ipv4(ctx) {
            None => drop(Reason::DropMalformed),
            Some(a) if a.sha == ep.mac && (a.spa == addr || a.spa == [0; 4]) => arp_from_sandbox(ctx, ep, &a),
            Some(_) => drop(Reason::DropSpoofedArp),
        },
        ETH_P_IPV6 => drop(Reason::DropNoIpv6),
        _ => drop(Reason::DropUnknownL3),
    }
}

/// ARP that speaks for the sandbox: a request for a sandbox of its overlay
/// network on another host is answered here, the rest is the kernel's.
#[inline(always)]
fn arp_from_sandbox(ctx: &TcContext, ep: &Endpoint, a: &ArpHdr) -> V {
    if let (Some(ov), Some(req)) = (maps::overlay(ep.network_id), arp::request(a)) {
        if let Some(remote) = maps::remote_endpoint(ov.vni, req.tpa) {
            return arp::reply(ctx, &req, &remote.mac);
        }
    }
    pass(Reason::PassArp)
}

/// Same overlay network, another host: ICC decides (no `--link` reaches
/// across hosts), then the packet goes to that host's VTEP in the
/// network's VNI, addressed to the remote sandbox's MAC.
#[inline(always)]
fn to_remote(
    ctx: &TcContext,
    eth_dst: &[u8; 6],
    p: &Packet,
    src: &Endpoint,
    remote: &RemoteEndpoint,
    vni: u32,
    dev: u32,
) -> V {
    if src.flags & endpoint_flags::NO_ICC != 0 && !linked(p.key.saddr, p.key.daddr) {
        return drop(Reason::DropIcc);
    }
    // As for a local neighbour (`route::to_sandbox`): written only when the
    // sender had another MAC, through the helper.
    if *eth_dst != remote.mac && Ctx::store(ctx, 0, &remote.mac).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    match tunnel::encapsulate(ctx, vni, remote.vtep_ipv4(), dev) {
        Some(action) => Verdict::new(Reason::Encapsulated, action),
        None => drop(Reason::DropOverlayEncapFailed),
    }
}

/// Same network: ICC decides, then the packet goes straight in.
#[inline(always)]
fn neighbour(ctx: &TcContext, eth_dst: &[u8; 6], p: &Packet, src: &Endpoint, dst: &Endpoint) -> V {
    if src.flags & endpoint_flags::NO_ICC != 0 && !linked(p.key.saddr, p.key.daddr) {
        return drop(Reason::DropIcc);
    }
    route::to_sandbox(ctx, eth_dst, dst, Reason::Forwarded)
}

#[inline(always)]
fn linked(from: [u8; 4], to: [u8; 4]) -> bool {
    // SAFETY: presence check only.
    unsafe { maps::LINKS.get(netpath_common::LinkKey { from, to }) }.is_some()
}

/// Whether `addr` is the broadcast address of `net`'s subnet.
#[inline(always)]
fn is_broadcast(net: &NetworkPolicy, addr: [u8; 4]) -> bool {
    let m = u32::from_ne_bytes(net.subnet_mask);
    u32::from_ne_bytes(addr) | m == u32::MAX
}

#[inline(always)]
fn in_subnet(net: &NetworkPolicy, addr: [u8; 4]) -> bool {
    let a = u32::from_ne_bytes(addr);
    let m = u32::from_ne_bytes(net.subnet_mask);
    a & m == u32::from_ne_bytes(net.subnet) & m
}

/// A packet of a tracked connection: translated and delivered here when its
/// new destination is a sandbox of this host, else left for the uplink.
#[inline(always)]
fn tracked(ctx: &TcContext, p: &Packet, entry: &CtEntry) -> V {
    let Some(dst) = maps::endpoint(entry.rewrite.daddr) else {
        return routed(ctx, p, Reason::PassTrackedToUplink, Leaving::Tracked(entry));
    };
    deliver_translated(ctx, p, &entry.rewrite, dst, nat::tracked_reason(p))
}

#[inline(always)]
fn deliver_translated(ctx: &TcContext, p: &Packet, to: &FlowKey, dst: &Endpoint, reason: Reason) -> V {
    // Checked before anything is rewritten: handed to the kernel, the
    // packet would be delivered to the host untranslated.
    if p.ttl <= 1 {
        return drop(Reason::DropTtlExceeded);
    }
    let gw_mac = maps::network(dst.network_id).map(|n| n.gateway_mac).unwrap_or_default();
    if nat::rewrite(ctx, p, to).is_err()
        || nat::decrement_ttl(ctx, p).is_err()
        || nat::set_macs(ctx, &dst.mac, &gw_mac).is_err()
    {
        return drop(Reason::DropWriteFailed);
    }
    route::redirect_into(dst, reason)
}

/// A sandbox connecting to a published port of this host.
#[inline(always)]
fn hairpin(ctx: &TcContext, p: &Packet, net: &NetworkPolicy, taddr: [u8; 4], tport: u16, now: u64) -> V {
    let Some(dst) = maps::endpoint(taddr) else {
        // Published to an address that is no endpoint (yet): the kernel's.
        return pass(Reason::PassNotOurs);
    };
    let to_self = taddr == p.key.saddr;
    let (flags, src_addr) =
        if to_self { (ct_flags::DNAT | ct_flags::SNAT, net.gateway) } else { (ct_flags::DNAT, p.key.saddr) };
    let to = FlowKey { saddr: src_addr, daddr: taddr, dport: tport, ..p.key };
    match conntrack::open_with_port(p, to, flags, now, to_self) {
        Ok(to) => {
            mark_hairpin_target(taddr);
            deliver_translated(ctx, p, &to, dst, Reason::DnatNew)
        }
        Err(refused) => stats::refused::<TcContext>(refused),
    }
}

/// From now on, replies of `addr` to sandboxes take the conntrack path.
#[inline(always)]
fn mark_hairpin_target(addr: [u8; 4]) {
    if let Some(ep) = maps::ENDPOINTS.get_ptr_mut(netpath_common::EndpointKey { ipv4: addr }) {
        // SAFETY: pointer into the map value; a racing writer sets the same bit.
        unsafe { (*ep).flags |= endpoint_flags::HAIRPIN_TARGET };
    }
}
