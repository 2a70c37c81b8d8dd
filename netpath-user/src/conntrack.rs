//! The connection tracking table from userspace: listing and the sweep that
//! removes expired entries (the programs also expire entries lazily).
use anyhow::Result;
use netpath_common::{CtEntry, FlowKey, ct_flags, ct_state};

use crate::datapath::Datapath;

/// CLOCK_MONOTONIC, the clock `bpf_ktime_get_coarse_ns` follows.
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Removes expired entries and their pairs; returns how many went.
pub fn collect_garbage(datapath: &Datapath) -> Result<usize> {
    let cfg = datapath.config()?;
    let now = now_ns();
    let expired: std::collections::HashSet<FlowKey> = datapath
        .conntrack_entries()?
        .into_iter()
        .filter(|(_, e)| cfg.expired(e.state, e.last_seen_ns, now))
        .flat_map(|(k, e)| [k, e.pair])
        .collect();
    datapath.remove_conntrack(|k, _| expired.contains(k))
}

fn state_name(state: u8) -> &'static str {
    match state {
        ct_state::SYN_SENT => "SYN_SENT",
        ct_state::SYN_RECV => "SYN_RECV",
        ct_state::ESTABLISHED => "ESTABLISHED",
        ct_state::CLOSING => "CLOSING",
        ct_state::UDP => "UDP",
        ct_state::ICMP => "ICMP",
        _ => "?",
    }
}

fn proto_name(p: u8) -> String {
    match p {
        netpath_common::IPPROTO_TCP => "tcp".into(),
        netpath_common::IPPROTO_UDP => "udp".into(),
        netpath_common::IPPROTO_ICMP => "icmp".into(),
        n => n.to_string(),
    }
}

fn flow(k: &FlowKey) -> String {
    let a = |b: [u8; 4]| std::net::Ipv4Addr::from(b);
    format!("{}:{} > {}:{}", a(k.saddr), k.sport, a(k.daddr), k.dport)
}

pub fn render(entries: &[(FlowKey, CtEntry)], now: u64) -> String {
    let mut out = format!("{:<6}{:<13}{:<46}{:<46}{:<10}IDLE\n", "PROTO", "STATE", "FLOW", "REWRITTEN", "NAT");
    for (k, e) in entries {
        let mut nat = Vec::new();
        if e.flags & ct_flags::SNAT != 0 {
            nat.push("snat");
        }
        if e.flags & ct_flags::DNAT != 0 {
            nat.push("dnat");
        }
        if e.flags & ct_flags::REPLY != 0 {
            nat.push("reply");
        }
        if e.flags & ct_flags::SEEN_REPLY != 0 {
            nat.push("answered");
        }
        out.push_str(&format!(
            "{:<6}{:<13}{:<46}{:<46}{:<10}{}s\n",
            proto_name(k.proto),
            state_name(e.state),
            flow(k),
            flow(&e.rewrite),
            nat.join(","),
            now.saturating_sub(e.last_seen_ns) / 1_000_000_000
        ));
    }
    out
}
