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

/// The table `conntrack ls` prints: one line per direction, columns as wide
/// as their widest cell and two spaces apart, so no two ever run together.
pub fn render(entries: &[(FlowKey, CtEntry)], now: u64) -> String {
    let mut rows: Vec<[String; 6]> = vec![["PROTO", "STATE", "FLOW", "REWRITTEN", "NAT", "IDLE"].map(String::from)];
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
        rows.push([
            proto_name(k.proto),
            state_name(e.state).to_string(),
            flow(k),
            flow(&e.rewrite),
            if nat.is_empty() { "-".to_string() } else { nat.join(",") },
            format!("{}s", now.saturating_sub(e.last_seen_ns) / 1_000_000_000),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_never_run_together() {
        let key = FlowKey {
            saddr: [10, 40, 0, 2],
            daddr: [198, 18, 0, 1],
            sport: 40000,
            dport: 7000,
            proto: 6,
            _pad: [0; 3],
        };
        let entry = CtEntry {
            rewrite: FlowKey { saddr: [198, 18, 0, 2], ..key },
            pair: key.reversed(),
            last_seen_ns: 0,
            state: ct_state::ESTABLISHED,
            flags: ct_flags::SNAT | ct_flags::DNAT | ct_flags::REPLY,
            _pad: [0; 2],
            handshake_ack: 0,
        };
        let table = render(&[(key, entry)], 5_000_000_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        let cells: Vec<&str> = lines[1].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            [
                "tcp",
                "ESTABLISHED",
                "10.40.0.2:40000 > 198.18.0.1:7000",
                "198.18.0.2:40000 > 198.18.0.1:7000",
                "snat,dnat,reply",
                "5s"
            ]
        );
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["PROTO", "STATE", "FLOW", "REWRITTEN", "NAT", "IDLE"]
        );
    }
}
