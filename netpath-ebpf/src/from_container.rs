//! TC ingress of every sandbox's host-side veth: what a sandbox sends.
//!
//! - Traffic to a sandbox of the same network is handed straight to it
//!   (`bpf_redirect_peer`), skipping the bridge.
//! - Tracked connections whose translated destination is a sandbox on this
//!   host (hairpin through a published port, and its replies) are translated
//!   and delivered here too.
//! - New connections from a sandbox to a published port of this host are
//!   DNATed here (hairpin); to itself, also SNATed to the gateway, since a
//!   sandbox drops packets that claim to come from its own address.
//! - `--internal` networks lose everything leaving their subnet.
//! - Everything else goes the kernel's way; masquerade happens on the uplink.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use netpath_common::{CtEntry, Endpoint, FlowKey, NetworkPolicy, Program, ct_flags, endpoint_flags, network_flags};

use crate::{
    conntrack, maps, nat,
    packet::{Kind, Packet, Parsed, parse_l3, parse_l4},
    route::{self, TC_ACT_REDIRECT},
    stats::{self, count},
};

const PROGRAM: Program = Program::FromContainer;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let mut p = match parse_l3(ctx) {
        Parsed::Ipv4(p) => p,
        Parsed::NotIpv4 => {
            count(PROGRAM, |c| c.passed_not_ipv4 += 1);
            return TC_ACT_OK;
        }
        Parsed::Malformed => {
            count(PROGRAM, |c| c.dropped_malformed += 1);
            return TC_ACT_SHOT;
        }
    };
    // The source must be the sandbox behind this very veth, so that a
    // sandbox cannot borrow another's address to reach past its network.
    let ifindex = route::ingress_ifindex(ctx);
    let Some(src) = maps::endpoint(p.key.saddr).filter(|src| src.host_ifindex == ifindex) else {
        count(PROGRAM, |c| c.passed_unknown_source += 1);
        return TC_ACT_OK;
    };
    let dst = maps::endpoint(p.key.daddr);
    // The fast path: a neighbour on the same network, and no connection of
    // ours that could need translating (two lookups, no transport parsing).
    if let Some(dst) = dst.filter(|d| d.network_id == src.network_id) {
        if src.flags & endpoint_flags::HAIRPIN_TARGET == 0 {
            return neighbour(ctx, &p, &src, &dst);
        }
    }
    if !parse_l4(ctx, &mut p) {
        count(PROGRAM, |c| c.dropped_malformed += 1);
        return TC_ACT_SHOT;
    }
    let cfg = maps::config();
    let now = conntrack::now();
    if p.kind != Kind::Other {
        if let Some(entry) = conntrack::lookup(&p.key, &p, &cfg, now) {
            return tracked(ctx, &p, &entry);
        }
    }
    if let Some(dst) = dst {
        if src.network_id != dst.network_id {
            count(PROGRAM, |c| c.dropped_other_network += 1);
            return TC_ACT_SHOT;
        }
        return neighbour(ctx, &p, &src, &dst);
    }
    let Some(net) = maps::network(src.network_id) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    if matches!(p.kind, Kind::Tcp | Kind::Udp) {
        if let Some(target) = crate::publish::find(&p.key, cfg.published_range_count) {
            if p.key.daddr == net.gateway || route::is_local(ctx.skb.skb.cast(), ifindex, p.key.saddr, p.key.daddr) {
                return hairpin(ctx, &p, &net, target.addr, target.port, now);
            }
        }
    }
    if net.flags & network_flags::INTERNAL != 0 && !in_subnet(&net, p.key.daddr) {
        count(PROGRAM, |c| c.dropped_internal_network += 1);
        return TC_ACT_SHOT;
    }
    if net.flags & network_flags::NO_ICC != 0 && in_subnet(&net, p.key.daddr) && p.key.daddr != net.gateway {
        // Not an endpoint of ours, yet on the network: nothing to reach.
        count(PROGRAM, |c| c.dropped_icc += 1);
        return TC_ACT_SHOT;
    }
    count(PROGRAM, |c| c.passed_no_endpoint += 1);
    TC_ACT_OK
}

/// Same network: ICC decides, then the packet goes straight in.
#[inline(always)]
fn neighbour(ctx: &TcContext, p: &Packet, src: &Endpoint, dst: &Endpoint) -> i32 {
    if src.flags & endpoint_flags::NO_ICC != 0 && !linked(p.key.saddr, p.key.daddr) {
        count(PROGRAM, |c| c.dropped_icc += 1);
        return TC_ACT_SHOT;
    }
    same_network(ctx, p, dst)
}

#[inline(always)]
fn linked(from: [u8; 4], to: [u8; 4]) -> bool {
    // SAFETY: presence check only.
    unsafe { maps::LINKS.get(netpath_common::LinkKey { from, to }) }.is_some()
}

#[inline(always)]
fn in_subnet(net: &NetworkPolicy, addr: [u8; 4]) -> bool {
    let a = u32::from_ne_bytes(addr);
    let m = u32::from_ne_bytes(net.subnet_mask);
    a & m == u32::from_ne_bytes(net.subnet) & m
}

#[inline(always)]
fn same_network(ctx: &TcContext, p: &Packet, dst: &Endpoint) -> i32 {
    let Some(eth) = crate::packet::ptr_at::<crate::packet::EthHdr>(ctx, 0) else {
        count(PROGRAM, |c| c.dropped_malformed += 1);
        return TC_ACT_SHOT;
    };
    // The sender resolved the neighbour itself, so the MAC is almost always
    // right already. Write only when it is not, and through the helper: a
    // direct packet write anywhere in the program makes the kernel unclone
    // every skb it sees, and TCP's are clones, which costs a copy per packet.
    // SAFETY: ptr_at checked the header lies within the packet.
    if unsafe { (*eth).dst } != dst.mac && ctx.store(0, &dst.mac, 0).is_err() {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
        return TC_ACT_SHOT;
    }
    let verdict = route::into_sandbox(dst);
    let len = u64::from(p.len);
    if verdict == TC_ACT_REDIRECT {
        count(PROGRAM, |c| {
            c.forwarded_packets += 1;
            c.forwarded_bytes += len;
        });
    } else {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
    }
    verdict
}

/// A packet of a tracked connection: translated and delivered here when its
/// new destination is a sandbox of this host, else left for the uplink.
#[inline(always)]
fn tracked(ctx: &TcContext, p: &Packet, entry: &CtEntry) -> i32 {
    let Some(dst) = maps::endpoint(entry.rewrite.daddr) else {
        return TC_ACT_OK;
    };
    deliver_translated(ctx, p, &entry.rewrite, &dst)
}

#[inline(always)]
fn deliver_translated(ctx: &TcContext, p: &Packet, to: &FlowKey, dst: &Endpoint) -> i32 {
    let gw_mac = maps::network(dst.network_id).map(|n| n.gateway_mac).unwrap_or_default();
    if nat::rewrite(ctx, p, to).is_err()
        || nat::decrement_ttl(ctx, p).is_err()
        || nat::set_macs(ctx, &dst.mac, &gw_mac).is_err()
    {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
        return TC_ACT_SHOT;
    }
    let verdict = route::into_sandbox(dst);
    let len = u64::from(p.len);
    count(PROGRAM, |c| {
        c.nat_packets += 1;
        c.nat_bytes += len;
    });
    verdict
}

/// A sandbox connecting to a published port of this host.
#[inline(always)]
fn hairpin(ctx: &TcContext, p: &Packet, net: &NetworkPolicy, taddr: [u8; 4], tport: u16, now: u64) -> i32 {
    let Some(dst) = maps::endpoint(taddr) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let to_self = taddr == p.key.saddr;
    let state = conntrack::initial_state(p);
    let (flags, src_addr) =
        if to_self { (ct_flags::DNAT | ct_flags::SNAT, net.gateway) } else { (ct_flags::DNAT, p.key.saddr) };
    let to = FlowKey { saddr: src_addr, daddr: taddr, dport: tport, ..p.key };
    match conntrack::open_with_port(&p.key, to, state, flags, now, to_self) {
        Ok(to) => {
            count(PROGRAM, |c| c.dnat_new += 1);
            mark_hairpin_target(taddr);
            deliver_translated(ctx, p, &to, &dst)
        }
        Err(refused) => stats::refused(PROGRAM, refused),
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
