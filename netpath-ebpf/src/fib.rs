//! Routing a sandbox's packet out of an uplink in the data path itself
//! (Cilium's "BPF host routing"), instead of handing it to the kernel's
//! forwarding: the kernel's FIB is asked where the packet goes and, when the
//! answer is one of netpath's uplinks, the packet is forwarded as the kernel
//! would (one hop of TTL, the next hop's MACs) and redirected to the
//! uplink's egress. Between the lookup (`uplink_hop`) and the forwarding
//! (`forward`) the caller translates it and hands the uplink's verdict over
//! with it (`handoff.rs`). It never meets netfilter's FORWARD hook, so a
//! host whose FORWARD policy is DROP (every Docker host) needs no rule for
//! netpath.
//!
//! Whatever the kernel's forwarding does more than that is left to it: an
//! expiring TTL (time exceeded), a packet larger than the route's MTU
//! (fragmentation, or "fragmentation needed" for path MTU discovery), IP
//! options, a destination that is local, unreachable or behind an interface
//! that is not an uplink (another bridge, a tunnel).
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup, bpf_redir_neigh},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use netpath_common::Uplink;

use crate::{
    ctx::Ctx,
    maps::UPLINKS,
    nat,
    packet::{IP_OFF, IPV4_HLEN, Kind, Packet},
    route::{self, AF_INET},
};

/// The FIB's answer for a packet it routes out of one of netpath's uplinks.
pub struct Hop {
    /// The uplink's ifindex.
    pub ifindex: u32,
    /// What netpath knows of the uplink (its address, masquerade's source).
    pub uplink: Uplink,
    /// The lookup's answer: the next hop's address (`ipv4_dst`, or
    /// `ipv6_dst` for an IPv6 gateway) and, when the neighbour is known,
    /// both MACs.
    params: bpf_fib_lookup,
    neighbour_known: bool,
}

/// What became of a packet sent on to an uplink.
pub enum Egress {
    /// Rewritten and redirected; the program returns this action.
    Redirected(i32),
    /// A header write failed.
    WriteFailed,
}

/// Where the FIB routes `p` (from the sandbox veth `ctx` runs on), when
/// that is out of one of netpath's uplinks and the data path may forward it
/// itself; `None` leaves it, untouched, to the kernel. Nothing is written.
#[inline(always)]
pub fn uplink_hop(ctx: &TcContext, p: &Packet) -> Option<Hop> {
    // The kernel answers an expiring TTL with time exceeded, and processes
    // options (record route, timestamps) when it forwards.
    if p.ttl <= 1 || p.l4_off != IP_OFF + IPV4_HLEN {
        return None;
    }
    let tot_len = wire_len(ctx, p)?;
    let [_, tos] = Ctx::load::<[u8; 2]>(ctx, IP_OFF)?;
    // As received on the veth: the lookup checks forwarding is on there.
    // With the packet's own (untranslated) source, as the kernel routes
    // before it masquerades.
    let mut params = route::fib_params(ctx.ifindex(), p.key.saddr, p.key.daddr);
    params.l4_protocol = p.key.proto;
    if matches!(p.kind, Kind::Tcp | Kind::Udp) {
        // For multipath routes: the flow hashes as the kernel would hash it.
        params.sport = p.key.sport.to_be();
        params.dport = p.key.dport.to_be();
    }
    // With a length given, the lookup answers FRAG_NEEDED when it exceeds
    // the route's MTU (device, route or learnt path MTU), before even
    // looking for a neighbour.
    params.__bindgen_anon_1.tot_len = tot_len;
    params.__bindgen_anon_2.tos = tos;
    let ret = route::fib(ctx.raw(), &mut params);
    let neighbour_known = match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => true,
        BPF_FIB_LKUP_RET_NO_NEIGH => false,
        // Local, unreachable, prohibited, forwarding off, too big, ...
        _ => return None,
    };
    let ifindex = params.ifindex;
    // SAFETY: the value is copied out immediately.
    let uplink = *unsafe { UPLINKS.get(ifindex) }?;
    Some(Hop { ifindex, uplink, params, neighbour_known })
}

/// Forwards `p` along `hop` as the kernel would (one hop of TTL, the next
/// hop's MACs) and redirects it to the uplink's egress. Whatever else the
/// packet needs (translation) must be written before.
#[inline(always)]
pub fn forward(ctx: &TcContext, p: &Packet, hop: &Hop) -> Egress {
    if nat::decrement_ttl(ctx, p).is_err() {
        return Egress::WriteFailed;
    }
    let action = if hop.neighbour_known {
        if nat::set_macs(ctx, &hop.params.dmac, &hop.params.smac).is_err() {
            return Egress::WriteFailed;
        }
        // SAFETY: plain helper call with scalar arguments.
        unsafe { bpf_redirect(hop.ifindex, 0) }
    } else {
        // The helper resolves the next hop the lookup chose (as the kernel's
        // output path would, queueing the packet while ARP runs) and writes
        // the MACs. Given the next hop, it routes nothing again: the route
        // stays the one chosen for the untranslated packet, whatever its
        // new source or mark.
        let mut nh = next_hop(&hop.params);
        // SAFETY: nh lives on this stack for the duration of the call.
        unsafe { bpf_redirect_neigh(hop.ifindex, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) }
    };
    Egress::Redirected(action as i32)
}

/// The next hop the lookup answered, as `bpf_redirect_neigh` takes it: an
/// IPv4 gateway, the destination itself on a link, or an IPv6 gateway of an
/// IPv4 route (the lookup then reports the family as IPv6).
#[inline(always)]
fn next_hop(params: &bpf_fib_lookup) -> bpf_redir_neigh {
    // SAFETY: zeroed is a valid bpf_redir_neigh; the union members read are
    // the ones the lookup wrote for the family it reports.
    unsafe {
        let mut nh: bpf_redir_neigh = core::mem::zeroed();
        nh.nh_family = params.family as u32;
        if params.family == AF_INET {
            nh.__bindgen_anon_1.ipv4_nh = params.__bindgen_anon_4.ipv4_dst;
        } else {
            nh.__bindgen_anon_1.ipv6_nh = params.__bindgen_anon_4.ipv6_dst;
        }
        nh
    }
}

/// The length the route's MTU must hold: the packet's own, or for a GSO
/// packet (one large skb the kernel will cut into segments) one segment's,
/// as the kernel's forwarding checks it. `None` when unknown.
#[inline(always)]
fn wire_len(ctx: &TcContext, p: &Packet) -> Option<u16> {
    // SAFETY: the context pointer is valid for the whole program run.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    if gso_size == 0 {
        let tot: [u8; 2] = Ctx::load(ctx, IP_OFF + 2)?;
        return Some(u16::from_be_bytes(tot));
    }
    let l4_hlen = match p.kind {
        // TCP's data offset, in 32-bit words (a 16-bit read, see ctx.rs).
        Kind::Tcp => ((Ctx::load::<[u8; 2]>(ctx, p.l4_off + 12)?[0] >> 4) as u32) * 4,
        Kind::Udp => 8,
        _ => return None,
    };
    let seg = (p.l4_off - IP_OFF) as u32 + l4_hlen + gso_size;
    u16::try_from(seg).ok()
}
