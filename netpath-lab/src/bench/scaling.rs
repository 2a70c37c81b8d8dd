//! Scaling: new connections and latency with many published ports (netpath
//! through its CLI, iptables with Docker's ruleset), time to add, remove
//! and load mappings, conntrack with many entries, and the control plane
//! (`run -d -p` / `rm`) with many sandboxes present.
use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context, Result};
use netpath_common::{CtEntry, FlowKey, IPPROTO_TCP, ct_flags, ct_state};
use serde::Serialize;

use netpath::publish::{self, Proto, Published};

use super::{
    catalog::{Scenario, System},
    measure::{Durations, Metric, Summary, conn_rate, measure},
    systems::{engine::Engine, iptables},
    testbed::Testbed,
    topology::{FILLER_FIRST, FILLER_IP, GATEWAY},
};

/// Figures at one size (ports, conntrack entries or sandboxes).
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub system: System,
    pub size: usize,
    pub conn_per_s: Option<Summary>,
    pub connect_p99_us: Option<Summary>,
    pub tcp_rr_p99_us: Option<Summary>,
    /// Adding / removing one mapping (µs).
    pub add_us: Option<Summary>,
    pub remove_us: Option<Summary>,
    /// Loading everything present at this size (ms), and how.
    pub load_ms: Option<f64>,
    pub note: String,
}

pub(super) fn conn_point(tb: &Testbed, system: System, reps: usize, d: &Durations, size: usize) -> Result<Point> {
    let route = tb.route(system, Scenario::Published).context("no published route")?;
    let (mut cps, mut p99, mut rr) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (r, _) = conn_rate(route, d.conn_ms, &tb.lab.lab_bin)?;
        cps.push(r.per_s);
        p99.push(r.connect.p99_us);
        let f = measure(route, Metric::TcpRr, d, &tb.lab.lab_bin)?;
        rr.push(f["tcp_rr_p99_us"]);
    }
    Ok(Point {
        system,
        size,
        conn_per_s: Summary::of(&cps),
        connect_p99_us: Summary::of(&p99),
        tcp_rr_p99_us: Summary::of(&rr),
        add_us: None,
        remove_us: None,
        load_ms: None,
        note: String::new(),
    })
}

/// netpath with 0..=max published ports: at each size one filler sandbox
/// publishes all of them with a single `netpath run -d -p ... -p ...` (the
/// previous filler removed first), timed as the load; then the
/// published-port connection rate, and one mapping's add/remove through the
/// library's `publish::install`/`uninstall` (the map writes `run -p` does).
pub fn netpath_ports(tb: &Testbed, sizes: &[usize], reps: usize, d: &Durations) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    let mut filler: Option<String> = None;
    for &size in sizes {
        if let Some(name) = filler.take() {
            tb.lab.netpath_ok(&["rm", "-f", &name])?;
        }
        let mut load = None;
        if size > 0 {
            let name = format!("fill{size}");
            let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", "bench"].map(String::from).to_vec();
            for i in 0..size {
                args.push("-p".into());
                args.push(format!("{}:80", FILLER_FIRST as usize + i));
            }
            let t = Instant::now();
            tb.lab.netpath_ok(&args)?;
            load = Some(t.elapsed());
            filler = Some(name);
        }
        let mut p = conn_point(tb, System::Netpath, reps, d, size)?;
        let dp = tb.lab.datapath();
        let (mut add, mut rm) = (Vec::new(), Vec::new());
        for i in 0..20u16 {
            let mut m = [Published {
                proto: Proto::Tcp,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_first: 60000 + i,
                host_last: 60000 + i,
                container_first: 80,
                range_slot: None,
            }];
            let t = Instant::now();
            publish::install(&dp, &mut m, FILLER_IP)?;
            add.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            publish::uninstall(&dp, &m)?;
            rm.push(t.elapsed().as_secs_f64() * 1e6);
        }
        p.add_us = Summary::of(&add);
        p.remove_us = Summary::of(&rm);
        p.load_ms = load.map(|l| l.as_secs_f64() * 1e3);
        p.note = format!("load = wall time of one `netpath run -d` with {size} `-p` (its sandbox creation included)");
        points.push(p);
    }
    Ok(points)
}

/// iptables with Docker's ruleset for N filler ports (measured ports last
/// in each chain): iptables-restore time for the whole set, the connection
/// rate, and adding / removing one port the way dockerd does (three
/// `iptables` invocations each).
pub fn iptables_ports(
    tb: &Testbed,
    flavour: System,
    sizes: &[usize],
    reps: usize,
    d: &Durations,
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    let bin = iptables::iptables_bin(flavour);
    for &size in sizes {
        let took = iptables::load_rules(&tb.host, iptables::restore_bin(flavour), size)?;
        let mut p = conn_point(tb, flavour, reps, d, size)?;
        let (mut add, mut rm) = (Vec::new(), Vec::new());
        for i in 0..3u16 {
            let m = iptables::Mapping { proto: "tcp", host_port: 60000 + i, ip: FILLER_IP, port: 80 };
            let rules = iptables::port_rules(&m);
            let t = Instant::now();
            for (table, chain, rule) in &rules {
                let mut args = vec!["-w", "-t", table, "-A", chain];
                args.extend(rule.split_whitespace());
                tb.host.run(bin, &args)?;
            }
            add.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            for (table, chain, rule) in &rules {
                let mut args = vec!["-w", "-t", table, "-D", chain];
                args.extend(rule.split_whitespace());
                tb.host.run(bin, &args)?;
            }
            rm.push(t.elapsed().as_secs_f64() * 1e6);
        }
        p.add_us = Summary::of(&add);
        p.remove_us = Summary::of(&rm);
        p.load_ms = Some(took.as_secs_f64() * 1e3);
        p.note = format!("load = one `{}` of the whole ruleset", iptables::restore_bin(flavour));
        points.push(p);
    }
    Ok(points)
}

/// netpath's published-port rate with `sizes` synthetic conntrack entries
/// present (written through the library's Datapath, as connection pairs,
/// established and fresh). The testbed must have been built with a
/// `conntrack-max` above the largest size.
pub fn conntrack(tb: &Testbed, sizes: &[usize], reps: usize, d: &Durations) -> Result<Vec<Point>> {
    let dp = tb.lab.datapath();
    let mut present = 0usize;
    let mut points = Vec::new();
    for &size in sizes {
        let t = Instant::now();
        let mut ct = dp.conntrack()?;
        let now = netpath::conntrack::now_ns();
        while present < size {
            let i = present / 2;
            let client = FlowKey {
                saddr: [100, 64 + (i >> 16) as u8 % 64, (i >> 8) as u8, i as u8],
                daddr: GATEWAY.octets(),
                sport: 1024 + (i % 50000) as u16,
                dport: 9999,
                proto: IPPROTO_TCP,
                _pad: [0; 3],
            };
            let rewritten = FlowKey { daddr: FILLER_IP.octets(), dport: 80, ..client };
            let fwd = CtEntry {
                rewrite: rewritten,
                pair: rewritten.reversed(),
                last_seen_ns: now,
                state: ct_state::ESTABLISHED,
                flags: ct_flags::DNAT,
                _pad: [0; 2],
                handshake_ack: 0,
            };
            let rev =
                CtEntry { rewrite: client.reversed(), pair: client, flags: ct_flags::DNAT | ct_flags::REPLY, ..fwd };
            ct.insert(client, fwd, 0)?;
            ct.insert(rewritten.reversed(), rev, 0)?;
            present += 2;
        }
        let fill_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut p = conn_point(tb, System::Netpath, reps, d, size)?;
        let count = dp.conntrack()?.keys().count();
        p.load_ms = Some(fill_ms);
        p.note = format!("{count} entries in CONNTRACK after the run; load = userspace fill of the new entries");
        points.push(p);
    }
    Ok(points)
}

/// Wall time of `netpath run -d -p` and `netpath rm` with `sizes`
/// sandboxes present (background sandboxes on the default network).
pub fn control_plane(tb: &Testbed, sizes: &[usize], reps: usize) -> Result<Vec<Point>> {
    timed_add_remove(
        System::Netpath,
        sizes,
        reps,
        "add = `netpath run -d -p 18080:80`, remove = `netpath rm -f`",
        |n| tb.lab.netpath_ok(&["run", "-d", "--name", &format!("bg{n}")]).map(drop),
        || tb.lab.netpath_ok(&["run", "-d", "--name", "cp", "-p", "18080:80"]).map(drop),
        || tb.lab.netpath_ok(&["rm", "-f", "cp"]).map(drop),
    )
}

/// Times `add` and `remove` `reps` times at each size, after `background`
/// brought the number of other sandboxes up to that size.
pub(super) fn timed_add_remove(
    system: System,
    sizes: &[usize],
    reps: usize,
    note: &str,
    mut background: impl FnMut(usize) -> Result<()>,
    mut add: impl FnMut() -> Result<()>,
    mut remove: impl FnMut() -> Result<()>,
) -> Result<Vec<Point>> {
    let mut present = 0usize;
    let mut points = Vec::new();
    for &size in sizes {
        while present < size {
            background(present)?;
            present += 1;
        }
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            add()?;
            added.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            remove()?;
            removed.push(t.elapsed().as_secs_f64() * 1e6);
        }
        points.push(Point {
            system,
            size,
            conn_per_s: None,
            connect_p99_us: None,
            tcp_rr_p99_us: None,
            add_us: Summary::of(&added),
            remove_us: Summary::of(&removed),
            load_ms: None,
            note: note.into(),
        });
    }
    Ok(points)
}

/// A container engine (Docker on its bridge or with netpath's network
/// plugin, Podman with netavark or with netpath's CNI plugin) with
/// 0..=max published ports: at each size one filler container publishes
/// all of them with a single `run -d -p ... -p ...` (the previous filler
/// removed first), timed as the load; then the published-port connection
/// rate through the testbed's `srv`.
pub fn engine_ports(
    tb: &Testbed,
    system: System,
    engine: &dyn Engine,
    sizes: &[usize],
    reps: usize,
    d: &Durations,
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    let mut filler: Option<String> = None;
    for &size in sizes {
        if let Some(name) = filler.take() {
            engine.remove(&name)?;
        }
        let mut load = None;
        if size > 0 {
            let name = format!("fill{size}");
            let ports: Vec<String> = (0..size).map(|i| format!("{}:80", FILLER_FIRST as usize + i)).collect();
            let t = Instant::now();
            engine.run_sleeper(&name, &ports)?;
            load = Some(t.elapsed());
            filler = Some(name);
        }
        let mut p = conn_point(tb, system, reps, d, size)?;
        p.load_ms = load.map(|l| l.as_secs_f64() * 1e3);
        p.note = format!("load = wall time of one `{} run -d` of a container with {size} `-p`", engine.program());
        points.push(p);
    }
    if let Some(name) = filler {
        engine.remove(&name)?;
    }
    Ok(points)
}

/// `run -d -p 18080:80` and `rm -f` of a container engine with `sizes`
/// containers present.
pub fn engine_control_plane(system: System, engine: &dyn Engine, sizes: &[usize], reps: usize) -> Result<Vec<Point>> {
    let program = engine.program();
    let network = engine.run_options().join(" ");
    let network = if network.is_empty() { String::new() } else { format!(" {network}") };
    timed_add_remove(
        system,
        sizes,
        reps,
        &format!("add = `{program} run -d{network} -p 18080:80 bb sleep`, remove = `{program} rm -f`"),
        |n| engine.run_sleeper(&format!("bg{n}"), &[]),
        || engine.run_sleeper("cp", &["18080:80".to_string()]),
        || engine.remove("cp"),
    )
}

/// The port counts an engine is measured at: none and 10,000 (or the
/// largest size of a smaller plan). Each `-p` costs an engine's own
/// networking iptables rules added one `iptables` call at a time (and
/// Docker with its userland proxy on a `docker-proxy` process): 10,000 of
/// them take netavark well over five minutes here (about 4,000 rules in the
/// first four), so a `--quick` run measures the engines' own networking
/// (Docker's bridge, netavark) at 1,000. On netpath a `-p` is a map entry.
pub fn engine_port_sizes(system: System, mode: &str, sizes: &[usize]) -> Vec<usize> {
    let own_networking = matches!(system, System::Podman | System::Docker | System::DockerNoProxy);
    let cap = if own_networking && mode == "quick" { 1_000 } else { 10_000 };
    let first = sizes.iter().copied().min().unwrap_or(0);
    let top = sizes.iter().copied().filter(|&s| s <= cap).max().unwrap_or(first);
    if top == first { vec![first] } else { vec![first, top] }
}
