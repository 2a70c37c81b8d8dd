//! Connection tracking for translated connections. Each connection has two
//! entries, one per direction, keyed by the tuple as it appears on the wire
//! where netpath sees it, each saying how to rewrite that direction. Expiry
//! is lazy (checked on lookup) plus a userspace sweep; the map is an LRU so a
//! full table evicts the coldest entry instead of refusing new connections.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_coarse_ns};
use netpath_common::{CtEntry, DatapathConfig, FlowKey, IPPROTO_TCP, IPPROTO_UDP, ct_flags, ct_state};

use crate::{
    maps::CONNTRACK,
    packet::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// How stale `last_seen_ns` may get before a packet refreshes it; avoids a
/// write to a shared cache line on every packet.
const REFRESH_NS: u64 = 1_000_000_000;

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn initial_state(p: &Packet) -> u8 {
    match p.key.proto {
        IPPROTO_TCP if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => ct_state::SYN_SENT,
        IPPROTO_TCP => ct_state::ESTABLISHED,
        IPPROTO_UDP => ct_state::UDP,
        _ => ct_state::ICMP,
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

/// The live entry for `key`, refreshed by `p`; expired entries (and their
/// pair) are removed and reported as absent.
#[inline(always)]
pub fn lookup(key: &FlowKey, p: &Packet, cfg: &DatapathConfig, now: u64) -> Option<CtEntry> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the pointer refers to the map value for the rest of this run;
    // concurrent updates of these plain fields are benign.
    let e = unsafe { &mut *entry };
    if cfg.expired(e.state, e.last_seen_ns, now) {
        let pair = e.pair;
        let _ = CONNTRACK.remove(key);
        let _ = CONNTRACK.remove(pair);
        return None;
    }
    let state = next_state(e.state, p);
    if state != e.state || now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.state = state;
        e.last_seen_ns = now;
    }
    Some(*e)
}

pub enum Open {
    Done,
    /// The reply tuple belongs to another connection: try another port.
    Taken,
    Full,
}

/// Records a new connection that arrived as `key` and leaves as `to`: two
/// entries, the reply direction (the reverse of `to`, rewritten back to the
/// reverse of `key`) first. With `exclusive` the reply tuple is claimed only
/// if free, which makes the choice of a translated source port atomic
/// across CPUs.
#[inline(always)]
pub fn open(key: &FlowKey, to: &FlowKey, state: u8, flags: u8, now: u64, exclusive: bool) -> Open {
    let reply_key = to.reversed();
    let reply = CtEntry {
        rewrite: key.reversed(),
        pair: *key,
        last_seen_ns: now,
        state,
        flags: flags | ct_flags::REPLY,
        _pad: [0; 6],
    };
    let mode = if exclusive { BPF_NOEXIST as u64 } else { 0 };
    if CONNTRACK.insert(reply_key, reply, mode).is_err() {
        return if exclusive { Open::Taken } else { Open::Full };
    }
    let orig = CtEntry { rewrite: *to, pair: reply_key, last_seen_ns: now, state, flags, _pad: [0; 6] };
    if CONNTRACK.insert(key, orig, 0).is_err() {
        let _ = CONNTRACK.remove(reply_key);
        return Open::Full;
    }
    Open::Done
}

/// Why a new connection could not be recorded.
pub enum Refused {
    PortsExhausted,
    Full,
}

/// Records a new connection that leaves as `to`. With `pick_port` the source
/// port is kept when its reply tuple is free, else other ports are tried
/// (`SNAT_ATTEMPTS` in all); without, the port is kept and the entry may
/// replace a stale one. Returns the tuple the connection leaves as.
#[inline(always)]
pub fn open_with_port(
    key: &FlowKey,
    to: FlowKey,
    state: u8,
    flags: u8,
    now: u64,
    pick_port: bool,
) -> Result<FlowKey, Refused> {
    for attempt in 0..crate::nat::SNAT_ATTEMPTS {
        let sport = if pick_port { crate::nat::candidate_port(to.sport, attempt) } else { to.sport };
        let to = FlowKey { sport, ..to };
        match open(key, &to, state, flags, now, pick_port) {
            Open::Done => return Ok(to),
            Open::Taken => continue,
            Open::Full => return Err(Refused::Full),
        }
    }
    Err(Refused::PortsExhausted)
}
