//! The host's uplinks, where traffic enters from and leaves to the outside.
//!
//! `from_uplink` (TC ingress): replies to masqueraded connections and
//! connections to published ports are translated and handed straight into
//! the sandbox; ICMP errors about them are translated too. `to_uplink` (TC
//! egress): sandbox traffic the kernel routed out is masqueraded, and replies
//! of published-port connections get the published address back; what the
//! data path routed out itself was translated on the sandbox's veth and
//! arrives with its verdict (`handoff.rs`). Overlay packets from other
//! hosts are decapsulated on `from_uplink` and delivered (`tunnel.rs`).
use aya_ebpf::programs::TcContext;
use netpath_common::{DatapathConfig, Endpoint, FlowKey, Reason, ct_flags};

use crate::{
    conntrack,
    ctx::Ctx,
    from_overlay, handoff,
    maps::{self, UPLINKS},
    masquerade::{self, Masquerade},
    nat,
    packet::{
        Frag, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMP_PROT_UNREACH, ICMP_TIME_EXCEEDED, Kind, Packet, Parsed,
        orphan_fragment, parse, parse_quoted,
    },
    publish, route, stats,
    tunnel::{self, Arrival, Strip},
};

use crate::stats::tc::{V, drop, pass};

/// The parsed packet, or the verdict on one NAT has nothing to do with. A
/// later fragment whose first piece was not seen is dropped: it may belong
/// to a translated connection, and untranslated it would leak a sandbox's
/// address (or reach the host, which cannot complete the datagram).
#[inline(always)]
fn translatable(ctx: &TcContext) -> Result<Packet, V> {
    match parse(ctx) {
        Parsed::Ipv4(p) if p.kind != Kind::Other => Ok(p),
        Parsed::Ipv4(p) if orphan_fragment(&p) => Err(drop(Reason::DropFragNoFirst)),
        Parsed::Ipv4(p) if p.frag != Frag::Whole => Err(pass(Reason::PassFragment)),
        Parsed::Ipv4(_) => Err(pass(Reason::PassOtherProtocol)),
        Parsed::NotIpv4 => Err(pass(Reason::PassNotIpv4)),
        Parsed::Malformed => Err(drop(Reason::DropMalformed)),
    }
}

#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> V {
    // Overlay traffic from other hosts first: the bulk of what an overlay
    // host receives, and none of it for NAT.
    match tunnel::arriving(ctx, ctx.ifindex()) {
        Arrival::Other => {}
        Arrival::Settled(verdict) => return verdict,
        Arrival::Decapsulate { key, network_id, inner } => {
            return match tunnel::decapsulate(ctx, &inner) {
                Ok(()) => from_overlay::deliver(ctx, &key, network_id, &inner.dst, &inner.src),
                Err(Strip::Refused) => pass(Reason::PassOverlayToKernel),
                Err(Strip::WriteFailed) => drop(Reason::DropWriteFailed),
            };
        }
    }
    let p = match translatable(ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    let cfg = maps::config();
    let now = conntrack::now();
    if p.kind == Kind::IcmpError {
        return icmp_error(ctx, &p, &cfg, now);
    }
    if let Some(entry) = conntrack::lookup(ctx, &p.key, &p, &cfg, now) {
        return into_sandbox(ctx, &p, &entry.rewrite, nat::tracked_reason(&p));
    }
    if p.kind == Kind::Fragment {
        // Its first piece went to the host (or was refused): so does this.
        return pass(Reason::PassFragment);
    }
    if !matches!(p.kind, Kind::Tcp | Kind::Udp) {
        return pass(Reason::PassNotOurs);
    }
    let Some(target) = publish::arriving(ctx.raw(), ctx.ifindex(), &p.key, cfg.published_range_count) else {
        return pass(Reason::PassNotOurs);
    };
    let to = FlowKey { daddr: target.addr, dport: target.port, ..p.key };
    match conntrack::open_with_port(&p, to, ct_flags::DNAT, now, false) {
        Ok(to) => into_sandbox(ctx, &p, &to, Reason::DnatNew),
        Err(refused) => stats::refused::<TcContext>(refused),
    }
}

/// Translates `p` to `to` and, when that lands in a sandbox of this host,
/// delivers it there; otherwise the kernel routes the translated packet.
#[inline(always)]
fn into_sandbox(ctx: &TcContext, p: &Packet, to: &FlowKey, reason: Reason) -> V {
    if nat::rewrite(ctx, p, to).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    match maps::endpoint(to.daddr) {
        Some(dst) => deliver(ctx, p, dst, reason),
        None => pass(reason),
    }
}

#[inline(always)]
fn deliver(ctx: &TcContext, p: &Packet, dst: &Endpoint, reason: Reason) -> V {
    let gw_mac = maps::network(dst.network_id).map(|n| n.gateway_mac).unwrap_or_default();
    if p.ttl <= 1 {
        // Let the kernel answer with time exceeded.
        return pass(Reason::PassTtlExpiring);
    }
    if nat::decrement_ttl(ctx, p).is_err() || nat::set_macs(ctx, &dst.mac, &gw_mac).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    route::redirect_into(dst, reason)
}

/// An ICMP error about a translated connection: the quoted header is the
/// packet as netpath sent it, so the connection is found under the reverse
/// of the quote (exactly), and the error is rewritten to what the sandbox
/// sent. Only errors any router on the path may send are believed:
/// unreachable (fragmentation needed included) and time exceeded; port and
/// protocol unreachable only from the host the quoted packet went to.
#[inline(always)]
fn icmp_error(ctx: &TcContext, p: &Packet, cfg: &DatapathConfig, now: u64) -> V {
    let Some(q) = parse_quoted(ctx, p) else {
        return pass(Reason::PassIcmpQuoteUnsupported);
    };
    let Some(entry) = conntrack::peek(&q.key.reversed(), cfg, now) else {
        return pass(Reason::PassNotOurs);
    };
    let plausible = match Ctx::load::<[u8; 2]>(ctx, p.l4_off) {
        Some([ICMP_DEST_UNREACH, code]) => {
            !matches!(code, ICMP_PROT_UNREACH | ICMP_PORT_UNREACH) || p.key.saddr == q.key.daddr
        }
        Some([ICMP_TIME_EXCEEDED, _]) => true,
        _ => false,
    };
    if !plausible {
        return drop(Reason::DropIcmpErrorImplausible);
    }
    let quoted_to = entry.rewrite.reversed();
    let Some(dst) = maps::endpoint(quoted_to.saddr) else {
        return pass(Reason::PassNotOurs);
    };
    if nat::rewrite_icmp_error(ctx, p, &q, &quoted_to, p.key.saddr, quoted_to.saddr).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    deliver(ctx, p, dst, Reason::IcmpErrorTranslated)
}

/// An ICMP error a sandbox sends about a translated connection (a published
/// UDP port with nothing listening, say): the quote is what the sandbox
/// received, so it gets the addresses the outside used, and the error leaves
/// from the address the outside talked to.
///
/// A sandbox only receives packets addressed to itself, so an error it sends
/// may only quote a packet sent to it: anything else is about another's
/// connection (forged to reset it) and is dropped. Errors of the host itself
/// (it routes) are about whatever it forwarded.
#[inline(always)]
fn icmp_error_out(ctx: &TcContext, p: &Packet, cfg: &DatapathConfig, now: u64) -> V {
    let Some(q) = parse_quoted(ctx, p) else {
        return pass(Reason::PassIcmpQuoteUnsupported);
    };
    if q.key.daddr != p.key.saddr && maps::endpoint(p.key.saddr).is_some() {
        return drop(Reason::DropIcmpErrorNotOwn);
    }
    let Some(entry) = conntrack::peek(&q.key.reversed(), cfg, now) else {
        return pass(Reason::PassNotOurs);
    };
    let quoted_to = entry.rewrite.reversed();
    if nat::rewrite_icmp_error(ctx, p, &q, &quoted_to, quoted_to.daddr, p.key.daddr).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    pass(Reason::IcmpErrorTranslated)
}

#[inline(always)]
pub fn to_uplink(ctx: &TcContext) -> V {
    // Routed out by the data path, which translated it on the sandbox's
    // veth already: only counted here.
    if let Some(reason) = handoff::take(ctx) {
        return pass(reason);
    }
    // The overlay's own tunnel packets, one per sandbox packet to another
    // host: let them go before the parse and conntrack lookups.
    if tunnel::is_own_vxlan(ctx, ctx.ifindex()) {
        return pass(Reason::PassNotOurs);
    }
    let p = match translatable(ctx) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    let cfg = maps::config();
    let now = conntrack::now();
    if p.kind == Kind::IcmpError {
        return icmp_error_out(ctx, &p, &cfg, now);
    }
    if let Some(entry) = conntrack::lookup(ctx, &p.key, &p, &cfg, now) {
        return translate(ctx, &p, &entry.rewrite, nat::tracked_reason(&p));
    }
    let Some(src) = maps::endpoint(p.key.saddr) else {
        return pass(Reason::PassNotOurs);
    };
    let Some(net) = maps::network(src.network_id) else {
        return pass(Reason::PassNoNetwork);
    };
    // SAFETY: the value is copied out immediately.
    let uplink_addr = unsafe { UPLINKS.get(ctx.ifindex()) }.map(|u| u.addr).unwrap_or_default();
    match masquerade::open(&p, &net, uplink_addr, now) {
        Masquerade::Translate(to) => translate(ctx, &p, &to, Reason::SnatNew),
        Masquerade::Leave(reason) => pass(reason),
        Masquerade::Refused(refused) => stats::refused::<TcContext>(refused),
    }
}

/// Rewrites `p` to `to`; the packet then continues on its way.
#[inline(always)]
fn translate(ctx: &TcContext, p: &Packet, to: &FlowKey, reason: Reason) -> V {
    if nat::rewrite(ctx, p, to).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    pass(reason)
}
