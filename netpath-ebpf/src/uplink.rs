//! The host's uplinks, where traffic enters from and leaves to the outside.
//!
//! `from_uplink` (TC ingress): replies to masqueraded connections and
//! connections to published ports are translated and handed straight into
//! the sandbox; ICMP errors about them are translated too. `to_uplink` (TC
//! egress): sandbox traffic the kernel routed out is masqueraded, and replies
//! of published-port connections get the published address back.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use netpath_common::{FlowKey, Program, ct_flags, network_flags};

use crate::{
    conntrack,
    maps::{self, UPLINKS},
    nat,
    packet::{Kind, Packet, Parsed, parse, parse_quoted},
    publish,
    route::{self, TC_ACT_REDIRECT},
    stats::{self, count},
};

#[inline(always)]
fn parsed(ctx: &TcContext, program: Program) -> Result<Packet, i32> {
    match parse(ctx) {
        Parsed::Ipv4(p) => Ok(p),
        Parsed::NotIpv4 => {
            count(program, |c| c.passed_not_ipv4 += 1);
            Err(TC_ACT_OK)
        }
        Parsed::Malformed => {
            count(program, |c| c.dropped_malformed += 1);
            Err(TC_ACT_SHOT)
        }
    }
}

#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> i32 {
    const PROGRAM: Program = Program::FromUplink;
    let p = match parsed(ctx, PROGRAM) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    if p.kind == Kind::Other {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    }
    let cfg = maps::config();
    let now = conntrack::now();
    if p.kind == Kind::IcmpError {
        return icmp_error(ctx, &p, &cfg, now);
    }
    if let Some(entry) = conntrack::lookup(&p.key, &p, &cfg, now) {
        return into_sandbox(ctx, &p, &entry.rewrite, PROGRAM);
    }
    if !matches!(p.kind, Kind::Tcp | Kind::Udp) {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    }
    let ifindex = route::ingress_ifindex(ctx);
    let Some(target) = publish::arriving(ctx.skb.skb.cast(), ifindex, &p.key, cfg.published_range_count) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let to = FlowKey { daddr: target.addr, dport: target.port, ..p.key };
    match conntrack::open_with_port(&p.key, to, conntrack::initial_state(&p), ct_flags::DNAT, now, false) {
        Ok(to) => {
            count(PROGRAM, |c| c.dnat_new += 1);
            into_sandbox(ctx, &p, &to, PROGRAM)
        }
        Err(refused) => stats::refused(PROGRAM, refused),
    }
}

/// Translates `p` to `to` and, when that lands in a sandbox of this host,
/// delivers it there; otherwise the kernel routes the translated packet.
#[inline(always)]
fn into_sandbox(ctx: &TcContext, p: &Packet, to: &FlowKey, program: Program) -> i32 {
    let verdict = translate(ctx, p, to, program);
    if verdict != TC_ACT_OK {
        return verdict;
    }
    let Some(dst) = maps::endpoint(to.daddr) else {
        return TC_ACT_OK;
    };
    deliver(ctx, p, &dst, program)
}

#[inline(always)]
fn deliver(ctx: &TcContext, p: &Packet, dst: &netpath_common::Endpoint, program: Program) -> i32 {
    let gw_mac = maps::network(dst.network_id).map(|n| n.gateway_mac).unwrap_or_default();
    if nat::decrement_ttl(ctx, p).is_err() {
        // Let the kernel answer with time exceeded.
        return TC_ACT_OK;
    }
    if nat::set_macs(ctx, &dst.mac, &gw_mac).is_err() {
        count(program, |c| c.dropped_redirect_failed += 1);
        return TC_ACT_SHOT;
    }
    let verdict = route::into_sandbox(dst);
    if verdict != TC_ACT_REDIRECT {
        count(program, |c| c.dropped_redirect_failed += 1);
    }
    verdict
}

/// An ICMP error about a translated connection: the quoted header is the
/// packet as netpath sent it, so the connection is found under the reverse
/// of the quote, and the error is rewritten to what the sandbox sent.
#[inline(always)]
fn icmp_error(ctx: &TcContext, p: &Packet, cfg: &netpath_common::DatapathConfig, now: u64) -> i32 {
    const PROGRAM: Program = Program::FromUplink;
    let Some(q) = parse_quoted(ctx, p) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let Some(entry) = conntrack::lookup(&q.key.reversed(), p, cfg, now) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let quoted_to = entry.rewrite.reversed();
    let Some(dst) = maps::endpoint(quoted_to.saddr) else {
        return TC_ACT_OK;
    };
    if nat::rewrite_icmp_error(ctx, p, &q, &quoted_to, p.key.saddr, quoted_to.saddr).is_err() {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
        return TC_ACT_SHOT;
    }
    count(PROGRAM, |c| c.icmp_errors_translated += 1);
    deliver(ctx, p, &dst, PROGRAM)
}

/// An ICMP error a sandbox sends about a translated connection (a published
/// UDP port with nothing listening, say): the quote is what the sandbox
/// received, so it gets the addresses the outside used, and the error leaves
/// from the address the outside talked to.
#[inline(always)]
fn icmp_error_out(ctx: &TcContext, p: &Packet, cfg: &netpath_common::DatapathConfig, now: u64) -> i32 {
    const PROGRAM: Program = Program::ToUplink;
    let Some(q) = parse_quoted(ctx, p) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let Some(entry) = conntrack::lookup(&q.key.reversed(), p, cfg, now) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let quoted_to = entry.rewrite.reversed();
    if nat::rewrite_icmp_error(ctx, p, &q, &quoted_to, quoted_to.daddr, p.key.daddr).is_err() {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
        return TC_ACT_SHOT;
    }
    count(PROGRAM, |c| c.icmp_errors_translated += 1);
    TC_ACT_OK
}

#[inline(always)]
pub fn to_uplink(ctx: &TcContext) -> i32 {
    const PROGRAM: Program = Program::ToUplink;
    let p = match parsed(ctx, PROGRAM) {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };
    if p.kind == Kind::Other {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    }
    let cfg = maps::config();
    let now = conntrack::now();
    if p.kind == Kind::IcmpError {
        return icmp_error_out(ctx, &p, &cfg, now);
    }
    if let Some(entry) = conntrack::lookup(&p.key, &p, &cfg, now) {
        return translate(ctx, &p, &entry.rewrite, PROGRAM);
    }
    let Some(src) = maps::endpoint(p.key.saddr) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    let Some(net) = maps::network(src.network_id) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    if net.flags & network_flags::MASQUERADE == 0 {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    }
    let ifindex = route::ingress_ifindex(ctx);
    let nat_addr = if net.snat_addr != [0; 4] {
        net.snat_addr
    } else {
        // SAFETY: value copied out immediately.
        match unsafe { UPLINKS.get(ifindex) } {
            Some(u) => u.addr,
            None => {
                count(PROGRAM, |c| c.passed_no_endpoint += 1);
                return TC_ACT_OK;
            }
        }
    };
    let state = conntrack::initial_state(&p);
    let to = FlowKey { saddr: nat_addr, ..p.key };
    match conntrack::open_with_port(&p.key, to, state, ct_flags::SNAT, now, true) {
        Ok(to) => {
            count(PROGRAM, |c| c.snat_new += 1);
            translate(ctx, &p, &to, PROGRAM)
        }
        Err(refused) => stats::refused(PROGRAM, refused),
    }
}

/// Rewrites `p` to `to`; the packet then continues on its way.
#[inline(always)]
fn translate(ctx: &TcContext, p: &Packet, to: &FlowKey, program: Program) -> i32 {
    if nat::rewrite(ctx, p, to).is_err() {
        count(program, |c| c.dropped_redirect_failed += 1);
        return TC_ACT_SHOT;
    }
    let len = u64::from(p.len);
    count(program, |c| {
        c.nat_packets += 1;
        c.nat_bytes += len;
    });
    TC_ACT_OK
}
