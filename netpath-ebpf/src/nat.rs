//! Header rewriting with incremental checksum updates, and source port
//! allocation for translated connections.
//! Written once for TC and XDP through the context layer.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::bpf_get_prandom_u32,
};
use netpath_common::{FlowKey, Reason};

pub use crate::ctx::Result;
use crate::{
    ctx::Ctx,
    packet::{IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, IP_TTL_OFF, Kind, Packet, Quoted},
};

const SNAT_PORT_FIRST: u16 = 32768;
const SNAT_PORT_COUNT: u32 = 28232;
/// How many source ports to try before giving up on a connection.
pub const SNAT_ATTEMPTS: u32 = 16;

#[inline(always)]
fn addr_word(a: [u8; 4]) -> u64 {
    u32::from_ne_bytes(a) as u64
}

#[inline(always)]
fn port_word(p: u16) -> u64 {
    p.to_be() as u64
}

/// Where the transport checksum sits and how the helper must treat it.
#[inline(always)]
fn l4_csum(kind: Kind, l4_off: usize) -> Option<(usize, u64)> {
    match kind {
        Kind::Tcp => Some((l4_off + 16, 0)),
        Kind::Udp => Some((l4_off + 6, BPF_F_MARK_MANGLED_0 as u64)),
        Kind::EchoRequest | Kind::EchoReply => Some((l4_off + 2, 0)),
        _ => None,
    }
}

#[inline(always)]
fn set_addr<C: Ctx>(ctx: &C, p: &Packet, off: usize, from: [u8; 4], to: [u8; 4]) -> Result {
    ctx.l3_csum_replace(IP_CSUM_OFF, addr_word(from), addr_word(to), 4)?;
    if let (Kind::Tcp | Kind::Udp, Some((csum_off, flags))) = (p.kind, l4_csum(p.kind, p.l4_off)) {
        ctx.l4_csum_replace(csum_off, addr_word(from), addr_word(to), flags | BPF_F_PSEUDO_HDR as u64 | 4)?;
    }
    ctx.store(off, &to)
}

#[inline(always)]
fn set_port<C: Ctx>(ctx: &C, kind: Kind, l4_off: usize, off: usize, from: u16, to: u16) -> Result {
    if let Some((csum_off, flags)) = l4_csum(kind, l4_off) {
        ctx.l4_csum_replace(csum_off, port_word(from), port_word(to), flags | 2)?;
    }
    ctx.store(off, &to.to_be())
}

/// Offsets of the source and destination "ports" for a transport kind; ICMP
/// echo has one identifier, standing in for the port its direction uses.
#[inline(always)]
fn port_offsets(kind: Kind, l4_off: usize) -> (Option<usize>, Option<usize>) {
    match kind {
        Kind::Tcp | Kind::Udp => (Some(l4_off), Some(l4_off + 2)),
        Kind::EchoRequest => (Some(l4_off + 4), None),
        Kind::EchoReply => (None, Some(l4_off + 4)),
        _ => (None, None),
    }
}

/// Rewrites addresses and ports of `p` to those of `to`.
#[inline(always)]
pub fn rewrite<C: Ctx>(ctx: &C, p: &Packet, to: &FlowKey) -> Result {
    if to.saddr != p.key.saddr {
        set_addr(ctx, p, IP_SRC_OFF, p.key.saddr, to.saddr)?;
    }
    if to.daddr != p.key.daddr {
        set_addr(ctx, p, IP_DST_OFF, p.key.daddr, to.daddr)?;
    }
    let (soff, doff) = port_offsets(p.kind, p.l4_off);
    if let Some(off) = soff {
        if to.sport != p.key.sport {
            set_port(ctx, p.kind, p.l4_off, off, p.key.sport, to.sport)?;
        }
    }
    if let Some(off) = doff {
        if to.dport != p.key.dport {
            set_port(ctx, p.kind, p.l4_off, off, p.key.dport, to.dport)?;
        }
    }
    Ok(())
}

/// What translating `p` along its connection is counted as.
#[inline(always)]
pub fn tracked_reason(p: &Packet) -> Reason {
    if p.kind == Kind::Fragment { Reason::FragmentTranslated } else { Reason::Nat }
}

/// Routing a packet costs one hop of TTL, as the kernel would charge.
#[inline(always)]
pub fn decrement_ttl<C: Ctx>(ctx: &C, p: &Packet) -> Result {
    if p.ttl <= 1 {
        return Err(());
    }
    let proto = p.key.proto;
    let from = u16::from_ne_bytes([p.ttl, proto]) as u64;
    let to = u16::from_ne_bytes([p.ttl - 1, proto]) as u64;
    ctx.l3_csum_replace(IP_CSUM_OFF, from, to, 2)?;
    // TTL and protocol together: header writes are 16 bits or wider.
    ctx.store(IP_TTL_OFF, &[p.ttl - 1, proto])
}

#[inline(always)]
pub fn set_macs<C: Ctx>(ctx: &C, dst: &[u8; 6], src: &[u8; 6]) -> Result {
    ctx.store(0, dst)?;
    ctx.store(6, src)
}

/// Translates the header quoted in an ICMP error to `to`, and the error's
/// outer addresses to `outer_saddr` and `outer_daddr`. The quoted transport checksum is left
/// as is: receivers match the quote to a socket, they do not verify it.
#[inline(always)]
pub fn rewrite_icmp_error<C: Ctx>(
    ctx: &C,
    outer: &Packet,
    q: &Quoted,
    to: &FlowKey,
    outer_saddr: [u8; 4],
    outer_daddr: [u8; 4],
) -> Result {
    let icmp_csum = outer.l4_off + 2;
    let inner_csum = q.ip_off + 10;
    let quoted_addr = |off: usize, from: [u8; 4], to: [u8; 4]| -> Result {
        let old_csum: u16 = ctx.load(inner_csum).ok_or(())?;
        ctx.l3_csum_replace(inner_csum, addr_word(from), addr_word(to), 4)?;
        let new_csum: u16 = ctx.load(inner_csum).ok_or(())?;
        ctx.l4_csum_replace(icmp_csum, addr_word(from), addr_word(to), 4)?;
        ctx.l4_csum_replace(icmp_csum, old_csum as u64, new_csum as u64, 2)?;
        ctx.store(off, &to)
    };
    if to.saddr != q.key.saddr {
        quoted_addr(q.ip_off + 12, q.key.saddr, to.saddr)?;
    }
    if to.daddr != q.key.daddr {
        quoted_addr(q.ip_off + 16, q.key.daddr, to.daddr)?;
    }
    let (soff, doff) = port_offsets(q.kind, q.l4_off);
    for (off, from, new) in [(soff, q.key.sport, to.sport), (doff, q.key.dport, to.dport)] {
        if let Some(off) = off {
            if from != new {
                ctx.l4_csum_replace(icmp_csum, port_word(from), port_word(new), 2)?;
                ctx.store(off, &new.to_be())?;
            }
        }
    }
    for (off, from, new) in [(IP_SRC_OFF, outer.key.saddr, outer_saddr), (IP_DST_OFF, outer.key.daddr, outer_daddr)] {
        if from != new {
            ctx.l3_csum_replace(IP_CSUM_OFF, addr_word(from), addr_word(new), 4)?;
            ctx.store(off, &new)?;
        }
    }
    Ok(())
}

/// The next source port to try: the connection's own first, then random
/// ports of the ephemeral range.
#[inline(always)]
pub fn candidate_port(original: u16, attempt: u32) -> u16 {
    if attempt == 0 {
        return original;
    }
    // SAFETY: plain helper call.
    let r = unsafe { bpf_get_prandom_u32() };
    SNAT_PORT_FIRST + (r % SNAT_PORT_COUNT) as u16
}
