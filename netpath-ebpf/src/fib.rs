//! Routing a sandbox's packet out of an uplink in the data path itself
//! (Cilium's "BPF host routing"), instead of handing it to the kernel's
//! forwarding: the kernel's FIB is asked where the packet goes and, when the
//! answer is one of netpath's uplinks, the packet is forwarded as the kernel
//! would (one hop of TTL, the next hop's MACs) and redirected to the
//! uplink's egress, where `to_uplink` still translates it. It never meets
//! netfilter's FORWARD hook, so a host whose FORWARD policy is DROP (every
//! Docker host) needs no rule for netpath.
//!
//! Whatever the kernel's forwarding does more than that is left to it: an
//! expiring TTL (time exceeded), a packet larger than the route's MTU
//! (fragmentation, or "fragmentation needed" for path MTU discovery), IP
//! options, a destination that is local, unreachable or behind an interface
//! that is not an uplink (another bridge, a tunnel).
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};

use crate::{
    ctx::Ctx,
    maps::UPLINKS,
    nat,
    packet::{IP_OFF, IPV4_HLEN, Kind, Packet},
    route,
};

/// What became of a packet offered to an uplink.
pub enum Egress {
    /// Rewritten and redirected; the program returns this action.
    Redirected(i32),
    /// Not ours to route: the kernel forwards it, unchanged.
    Kernel,
    /// The lookup chose an uplink but a header write failed.
    WriteFailed,
}

/// Forwards `p` (from the sandbox veth `ctx` runs on) out of an uplink when
/// the FIB routes it to one; otherwise leaves it untouched for the kernel.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext, p: &Packet) -> Egress {
    // The kernel answers an expiring TTL with time exceeded, and processes
    // options (record route, timestamps) when it forwards.
    if p.ttl <= 1 || p.l4_off != IP_OFF + IPV4_HLEN {
        return Egress::Kernel;
    }
    let Some(tot_len) = wire_len(ctx, p) else {
        return Egress::Kernel;
    };
    let Some([_, tos]) = Ctx::load::<[u8; 2]>(ctx, IP_OFF) else {
        return Egress::Kernel;
    };
    // As received on the veth: the lookup checks forwarding is on there.
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
        _ => return Egress::Kernel,
    };
    let out = params.ifindex;
    // SAFETY: presence check only.
    if unsafe { UPLINKS.get(out) }.is_none() {
        return Egress::Kernel;
    }
    if nat::decrement_ttl(ctx, p).is_err() {
        return Egress::WriteFailed;
    }
    let action = if neighbour_known {
        if nat::set_macs(ctx, &params.dmac, &params.smac).is_err() {
            return Egress::WriteFailed;
        }
        // SAFETY: plain helper call with scalar arguments.
        unsafe { bpf_redirect(out, 0) }
    } else {
        // The helper resolves the next hop (as the kernel's output path
        // would, queueing the packet while ARP runs) and writes the MACs.
        // SAFETY: no next-hop parameters: the helper routes by itself.
        unsafe { bpf_redirect_neigh(out, core::ptr::null_mut(), 0, 0) }
    };
    Egress::Redirected(action as i32)
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
