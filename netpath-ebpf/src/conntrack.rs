//! Connection tracking for translated connections. Each connection has two
//! entries, one per direction, keyed by the tuple as it appears on the wire
//! where netpath sees it, each saying how to rewrite that direction (and
//! each enough to rebuild the other: `CtEntry::pair_entry`).
//!
//! Two tables, as Linux tells assured from unassured connections:
//! - `CT_NEW` holds connections not yet confirmed: opened by a TCP SYN (only
//!   a SYN opens a TCP connection), a first datagram or echo request. The
//!   responder's answer marks them; the originator's next packet (TCP: the
//!   handshake's ACK) proves it receives at its address and moves the
//!   connection to `CONNTRACK`. A flood from forged sources never gets there.
//! - `CONNTRACK` holds confirmed connections. Both are LRU maps, so a full
//!   table evicts its coldest entry instead of refusing: half-open floods
//!   evict only half-open entries (Linux's `early_drop`, by construction).
//!
//! A confirmed direction, when its `last_seen_ns` is refreshed (at most once
//! a second), looks its other half up too: the LRU then ages both alike, and
//! a half the LRU evicted alone is rebuilt. Expiry is lazy (checked on
//! lookup) plus a userspace sweep.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_coarse_ns};
use netpath_common::{CtEntry, DatapathConfig, FlowKey, IPPROTO_TCP, IPPROTO_UDP, ct_flags, ct_state};

use crate::{
    ctx::Ctx,
    maps::{CONNTRACK, CT_NEW},
    packet::{Kind, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// How stale `last_seen_ns` may get before a packet refreshes it; avoids a
/// write to a shared cache line on every packet.
const REFRESH_NS: u64 = 1_000_000_000;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The state a connection opened by `p` starts in; `None` for TCP that is
/// not a bare SYN (null, ACK, RST, FIN, XMAS...), which may not open one.
#[inline(always)]
fn initial_state(p: &Packet) -> Option<u8> {
    match p.key.proto {
        IPPROTO_TCP if p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN => Some(ct_state::SYN_SENT),
        IPPROTO_TCP => None,
        IPPROTO_UDP => Some(ct_state::UDP),
        _ => Some(ct_state::ICMP),
    }
}

#[inline(always)]
fn next_state(state: u8, p: &Packet) -> u8 {
    if p.key.proto != IPPROTO_TCP {
        return state;
    }
    let f = p.tcp_flags;
    if f & (TCP_FIN | TCP_RST) != 0 {
        ct_state::CLOSING
    } else if f & (TCP_SYN | TCP_ACK) == TCP_SYN {
        ct_state::SYN_SENT
    } else if state == ct_state::SYN_SENT && f & TCP_ACK != 0 {
        ct_state::ESTABLISHED
    } else {
        state
    }
}

/// The live entry for `key`, refreshed by `p` (which may confirm the
/// connection); expired entries (and their pair) are removed and reported
/// as absent.
#[inline(always)]
pub fn lookup<C: Ctx>(ctx: &C, key: &FlowKey, p: &Packet, cfg: &DatapathConfig, now: u64) -> Option<CtEntry> {
    if let Some(entry) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: the pointer refers to the map value for the rest of this
        // run; concurrent updates of these plain fields are benign.
        return confirmed(key, unsafe { &mut *entry }, p, cfg, now);
    }
    let entry = CT_NEW.get_ptr_mut(key)?;
    // SAFETY: as above.
    unconfirmed(ctx, key, unsafe { &mut *entry }, p, cfg, now)
}

/// The live entry for `key`, left as it is: for ICMP errors, which neither
/// keep a connection alive nor confirm it.
#[inline(always)]
pub fn peek(key: &FlowKey, cfg: &DatapathConfig, now: u64) -> Option<CtEntry> {
    // SAFETY: values are copied out immediately.
    let e = match unsafe { CONNTRACK.get(key) } {
        Some(e) => *e,
        None => *unsafe { CT_NEW.get(key) }?,
    };
    (!cfg.expired(e.state, e.last_seen_ns, now)).then_some(e)
}

#[inline(always)]
fn confirmed(key: &FlowKey, e: &mut CtEntry, p: &Packet, cfg: &DatapathConfig, now: u64) -> Option<CtEntry> {
    if cfg.expired(e.state, e.last_seen_ns, now) {
        let pair = e.pair;
        let _ = CONNTRACK.remove(key);
        let _ = CONNTRACK.remove(&pair);
        return None;
    }
    let state = next_state(e.state, p);
    if state != e.state || now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.state = state;
        e.last_seen_ns = now;
        // SAFETY: presence check only.
        if unsafe { CONNTRACK.get(&e.pair) }.is_none() {
            // Evicted alone: rebuild it, unless another connection took the
            // tuple meanwhile.
            let _ = CONNTRACK.insert(&e.pair, &e.pair_entry(key), BPF_NOEXIST as u64);
        }
    }
    Some(*e)
}

#[inline(always)]
fn unconfirmed<C: Ctx>(
    ctx: &C,
    key: &FlowKey,
    e: &mut CtEntry,
    p: &Packet,
    cfg: &DatapathConfig,
    now: u64,
) -> Option<CtEntry> {
    if cfg.expired(e.state, e.last_seen_ns, now) {
        let pair = e.pair;
        let _ = CT_NEW.remove(key);
        let _ = CT_NEW.remove(&pair);
        return None;
    }
    let tcp = p.key.proto == IPPROTO_TCP;
    let f = p.tcp_flags;
    if tcp && f & (TCP_FIN | TCP_RST) != 0 {
        // Refused or abandoned before it was confirmed.
        e.state = ct_state::CLOSING;
        e.last_seen_ns = now;
        return Some(*e);
    }
    if e.flags & ct_flags::REPLY != 0 {
        // The responder: a SYN-ACK (TCP) or any answer marks the connection
        // once, on both entries.
        let answers = !tcp || f & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
        if answers && e.flags & ct_flags::SEEN_REPLY == 0 {
            e.flags |= ct_flags::SEEN_REPLY;
            if tcp {
                e.state = ct_state::SYN_RECV;
            }
            e.last_seen_ns = now;
            // Read only on this packet of a connection, never on the fast path.
            let seq = if tcp { ctx.load::<u32>(p.l4_off + 4).map(u32::from_be).unwrap_or(0) } else { 0 };
            if let Some(orig) = CT_NEW.get_ptr_mut(&e.pair) {
                // SAFETY: pointer into the map value, as above.
                let orig = unsafe { &mut *orig };
                orig.flags |= ct_flags::SEEN_REPLY;
                if tcp {
                    orig.state = ct_state::SYN_RECV;
                    orig.handshake_ack = seq.wrapping_add(1);
                }
                orig.last_seen_ns = now;
            }
            return Some(*e);
        }
    } else if e.flags & ct_flags::SEEN_REPLY != 0
        && p.kind != Kind::Fragment
        && (!tcp || (f & (TCP_SYN | TCP_ACK) == TCP_ACK && handshake_acked(ctx, p, e)))
    {
        // The originator, after an answer: TCP's handshake ACK (which
        // acknowledges the SYN-ACK it saw), or any packet. It receives at
        // its address: confirmed.
        let mut c = *e;
        c.flags &= !ct_flags::SEEN_REPLY;
        c.last_seen_ns = now;
        if tcp {
            c.state = ct_state::ESTABLISHED;
        }
        promote(key, &c);
        return Some(c);
    }
    // Anything else keeps the state: an unconfirmed connection never
    // reaches ESTABLISHED and its long timeout.
    if now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.last_seen_ns = now;
    }
    Some(*e)
}

/// Whether `p` acknowledges the responder's SYN-ACK.
#[inline(always)]
fn handshake_acked<C: Ctx>(ctx: &C, p: &Packet, e: &CtEntry) -> bool {
    ctx.load::<u32>(p.l4_off + 8).map(u32::from_be) == Some(e.handshake_ack)
}

/// Moves a confirmed connection from `CT_NEW` to `CONNTRACK`; on failure
/// it stays where it is.
#[inline(always)]
fn promote(key: &FlowKey, c: &CtEntry) {
    let pair = c.pair;
    if CONNTRACK.insert(key, c, 0).is_err() {
        return;
    }
    if CONNTRACK.insert(&pair, &c.pair_entry(key), 0).is_err() {
        let _ = CONNTRACK.remove(key);
        return;
    }
    let _ = CT_NEW.remove(key);
    let _ = CT_NEW.remove(&pair);
}

pub enum Open {
    Done,
    /// The reply tuple belongs to another connection: try another port.
    Taken,
    Full,
}

/// Records a new connection that arrived as `key` and leaves as `to`: two
/// entries in `CT_NEW`, the reply direction (the reverse of `to`, rewritten
/// back to the reverse of `key`) first. With `exclusive` the reply tuple is
/// claimed only if no connection, new or confirmed, holds it, which makes
/// the choice of a translated source port atomic across CPUs and sandboxes.
#[inline(always)]
fn open(key: &FlowKey, to: &FlowKey, state: u8, flags: u8, now: u64, exclusive: bool) -> Open {
    let reply_key = to.reversed();
    let orig =
        CtEntry { rewrite: *to, pair: reply_key, last_seen_ns: now, state, flags, _pad: [0; 2], handshake_ack: 0 };
    let mode = if exclusive { BPF_NOEXIST as u64 } else { 0 };
    if CT_NEW.insert(&reply_key, &orig.pair_entry(key), mode).is_err() {
        return if exclusive { Open::Taken } else { Open::Full };
    }
    // Checked after the claim: a connection being confirmed meanwhile is
    // in CONNTRACK before it leaves CT_NEW, so one of the two sees it.
    // SAFETY: presence check only.
    if exclusive && unsafe { CONNTRACK.get(&reply_key) }.is_some() {
        let _ = CT_NEW.remove(&reply_key);
        return Open::Taken;
    }
    if CT_NEW.insert(key, &orig, 0).is_err() {
        let _ = CT_NEW.remove(&reply_key);
        return Open::Full;
    }
    Open::Done
}

/// Why a new connection could not be recorded.
pub enum Refused {
    PortsExhausted,
    Full,
    /// TCP that is not a SYN.
    NotSyn,
    /// A later fragment: its datagram's first piece opened nothing.
    LaterFragment,
}

/// Records a new connection opened by `p` that leaves as `to`. With
/// `pick_port` the source port is kept when its reply tuple is free, else
/// other ports are tried (`SNAT_ATTEMPTS` in all); without, the port is kept
/// and the entry may replace a stale one. Returns the tuple the connection
/// leaves as.
#[inline(always)]
pub fn open_with_port(p: &Packet, to: FlowKey, flags: u8, now: u64, pick_port: bool) -> Result<FlowKey, Refused> {
    if p.kind == Kind::Fragment {
        return Err(Refused::LaterFragment);
    }
    let Some(state) = initial_state(p) else {
        return Err(Refused::NotSyn);
    };
    for attempt in 0..crate::nat::SNAT_ATTEMPTS {
        let sport = if pick_port { crate::nat::candidate_port(to.sport, attempt) } else { to.sport };
        let to = FlowKey { sport, ..to };
        match open(&p.key, &to, state, flags, now, pick_port) {
            Open::Done => return Ok(to),
            Open::Taken => continue,
            Open::Full => return Err(Refused::Full),
        }
    }
    Err(Refused::PortsExhausted)
}
