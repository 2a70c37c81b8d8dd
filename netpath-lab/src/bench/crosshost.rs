//! The cross-host bench: a sandbox on host 1 talks to a sandbox on host 2
//! of a multi-host lab (`multihost`), through each system side by side:
//!
//! - `kernel-vxlan`: Flannel's VXLAN backend done by hand, no eBPF: on each
//!   host a bridge holding the host's /24 of 10.244.0.0/16, a VXLAN device
//!   (VNI 1, port 8472, no learning) holding the subnet's .0, and for every
//!   other host a route `via its .0 onlink`, a permanent neighbour entry
//!   (its VXLAN device's MAC) and an FDB entry (that MAC → its underlay
//!   address), exactly what flanneld programs;
//! - `underlay`: host 1 to host 2 over the underlay itself, no
//!   encapsulation: the bound.
//!
//! The overlay systems of netpath (and Docker swarm's) join as further
//! `System`s measured over the same `Route`s.
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;

use super::systems::{
    docker::{self, Dockerd},
    engine::Engine,
};
use super::{
    catalog::{Scenario, System},
    measure::{self, Durations, Figures, Metric},
    testbed::{Place, Procs, Route, start_servers},
    topology::{IPERF_PORT, RR_PORT},
};
use crate::{
    fixture::Binaries,
    multihost::{self, MultiHost},
};
use netpath::netns;

/// Flannel's defaults: VNI 1 on Linux's pre-standard port 8472.
const FLANNEL_VNI: u32 = 1;
const FLANNEL_PORT: u16 = 8472;
const FLANNEL_MTU: u32 = 1450;

/// What the cross-host bench measures: every metric that means something
/// between two hosts (no wire sender: there is no published port).
pub const METRICS: [Metric; 5] = [Metric::Tput1, Metric::Tput4, Metric::UdpPps, Metric::TcpRr, Metric::ConnRate];

#[derive(clap::Args, Debug)]
pub struct CrossHostArgs {
    /// Where the report goes (crosshost.md, crosshost.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Shorter runs.
    #[arg(long)]
    pub quick: bool,
    /// A few packets per metric only: proves every system carries traffic.
    #[arg(long)]
    pub smoke: bool,
    /// Only these systems (kernel-vxlan, docker-swarm, underlay).
    #[arg(long = "system")]
    pub systems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub system: System,
    pub label: &'static str,
    pub figures: Figures,
    /// Packets host 1's VXLAN device sent during the run (kernel-vxlan):
    /// the traffic took the tunnel, not some other path.
    pub encapsulated_packets: Option<u64>,
    pub errors: Vec<String>,
}

/// TX packets of `dev` in `place`, from `ip -s -j link`.
fn tx_packets(place: &Place, dev: &str) -> Result<u64> {
    let out = place.run("ip", &["-s", "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    v[0]["stats64"]["tx"]["packets"].as_u64().with_context(|| format!("no TX counter for {dev}"))
}

/// The /24 of host `i` (0-based) in the Flannel-style network.
fn flannel_subnet(i: usize) -> [u8; 3] {
    [10, 244, u8::try_from(i + 1).expect("a handful of hosts")]
}

fn flannel_mac(i: usize) -> String {
    let s = flannel_subnet(i);
    format!("02:fe:{:02x}:{:02x}:{:02x}:00", s[0], s[1], s[2])
}

/// A sandbox namespace of the kernel baseline, removed on drop.
struct Sandboxes(Vec<PathBuf>);

impl Drop for Sandboxes {
    fn drop(&mut self) {
        for ns in &self.0 {
            netpath::sandbox::kill_all_in(ns);
            if let Err(e) = netns::remove(ns) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// Builds Flannel's VXLAN backend on every host of `lab`, one sandbox per
/// host at .2 of its /24; returns the sandboxes' places.
fn flannel(lab: &MultiHost, sandboxes: &mut Sandboxes) -> Result<Vec<(Place, Ipv4Addr)>> {
    let mut places = Vec::new();
    for (i, h) in lab.hosts.iter().enumerate() {
        let [a, b, c] = flannel_subnet(i);
        let host = Place::ns(&h.ns);
        host.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        host.run("ip", &["link", "add", "cni0", "type", "bridge"])?;
        host.run("ip", &["addr", "add", &format!("{a}.{b}.{c}.1/24"), "dev", "cni0"])?;
        host.run("ip", &["link", "set", "cni0", "up"])?;
        let (port, local) = (FLANNEL_PORT.to_string(), h.ip.to_string());
        host.run(
            "ip",
            &[
                "link",
                "add",
                "flannel.1",
                "address",
                &flannel_mac(i),
                "mtu",
                &FLANNEL_MTU.to_string(),
                "type",
                "vxlan",
                "id",
                &FLANNEL_VNI.to_string(),
                "local",
                &local,
                "dev",
                multihost::HOST_UPLINK,
                "dstport",
                &port,
                "nolearning",
            ],
        )?;
        host.run("ip", &["addr", "add", &format!("{a}.{b}.{c}.0/32"), "dev", "flannel.1"])?;
        host.run("ip", &["link", "set", "flannel.1", "up"])?;
        for (j, other) in lab.hosts.iter().enumerate().filter(|(j, _)| *j != i) {
            let [x, y, z] = flannel_subnet(j);
            let gw = format!("{x}.{y}.{z}.0");
            host.run("ip", &["route", "add", &format!("{x}.{y}.{z}.0/24"), "via", &gw, "dev", "flannel.1", "onlink"])?;
            host.run("ip", &["neigh", "add", &gw, "lladdr", &flannel_mac(j), "dev", "flannel.1", "nud", "permanent"])?;
            host.run("bridge", &["fdb", "append", &flannel_mac(j), "dev", "flannel.1", "dst", &other.ip.to_string()])?;
        }
        // The sandbox: a veth into the bridge, Flannel's MTU.
        let ns = PathBuf::from(format!("/run/netns/{}-fl{}", lab.id, i + 1));
        netns::create_net(&ns)?;
        sandboxes.0.push(ns.clone());
        let peer = format!("fl{}peer", i + 1);
        let mtu = FLANNEL_MTU.to_string();
        host.run(
            "ip",
            &["link", "add", &format!("veth{}", i + 1), "mtu", &mtu, "type", "veth", "peer", "name", &peer],
        )?;
        host.run("ip", &["link", "set", &format!("veth{}", i + 1), "master", "cni0", "up"])?;
        host.run("ip", &["link", "set", &peer, "netns", &ns.to_string_lossy()])?;
        let sandbox = Place::ns(&ns);
        sandbox.run("ip", &["link", "set", "lo", "up"])?;
        sandbox.run("ip", &["link", "set", &peer, "name", "eth0"])?;
        let ip = Ipv4Addr::new(a, b, c, 2);
        sandbox.run("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        sandbox.run("ip", &["link", "set", "eth0", "up"])?;
        sandbox.run("ip", &["route", "add", "default", "via", &format!("{a}.{b}.{c}.1")])?;
        places.push((sandbox, ip));
    }
    Ok(places)
}

/// The swarm's daemons: on drop each leaves the swarm, removes its
/// containers and stops (`Dockerd`'s drop), and its root goes, whatever
/// failed on the way.
struct SwarmDaemons(Vec<Dockerd>);

impl Drop for SwarmDaemons {
    fn drop(&mut self) {
        for d in &self.0 {
            let mut leave = d.cmd();
            leave.args(["swarm", "leave", "--force"]);
            let _ = measure::run_bounded(leave, Duration::from_secs(30));
        }
        let roots: Vec<PathBuf> = self.0.iter().map(|d| d.dir.clone()).collect();
        self.0.clear();
        for dir in roots {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("warning: removing {}: {e}", dir.display());
            }
        }
    }
}

/// Docker swarm across the lab's first two hosts, as PEERS.md verified it:
/// a hermetic dockerd in each host namespace, `swarm init` on host 1,
/// `swarm join` from host 2, an attachable overlay network, a busybox
/// container on each host. Returns (client place, server place, server
/// address on the overlay).
fn swarm(lab: &MultiHost, daemons: &mut Vec<Dockerd>) -> Result<(Place, Place, Ipv4Addr)> {
    if !docker::available() {
        anyhow::bail!("dockerd, runc or busybox-static missing (cargo xtask bench installs them)");
    }
    for (i, h) in lab.hosts.iter().take(2).enumerate() {
        let dir = std::env::temp_dir().join(format!("{}-docker{}", lab.id, i + 1));
        daemons.push(Dockerd::start_in(&h.ns, dir, format!("{}-docker{}", lab.id, i + 1), false, None)?);
    }
    let (h1, h2) = (lab.host(0).ip.to_string(), lab.host(1).ip.to_string());
    let bounded = |d: &Dockerd, args: &[&str]| -> Result<String> {
        let mut cmd = d.cmd();
        cmd.args(args);
        measure::run_bounded(cmd, Duration::from_secs(60))
    };
    bounded(&daemons[0], &["swarm", "init", "--advertise-addr", &h1])?;
    let token = bounded(&daemons[0], &["swarm", "join-token", "-q", "worker"])?;
    bounded(&daemons[1], &["swarm", "join", "--token", token.trim(), "--advertise-addr", &h2, &format!("{h1}:2377")])?;
    bounded(&daemons[0], &["network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.20.0/24", "xhov"])?;
    for d in daemons.iter() {
        d.import_busybox()?;
    }
    let run = |d: &Dockerd, name: &str| {
        bounded(d, &["run", "-d", "--pull", "never", "--name", name, "--network", "xhov", "bb", "sleep", "1000000"])
    };
    run(&daemons[1], "srv")?;
    run(&daemons[0], "cli")?;
    let server = Place::ns(daemons[1].netns_of("srv")?);
    let client = Place::ns(daemons[0].netns_of("cli")?);
    let ip = daemons[1].cli(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "srv"])?;
    let ip = ip.trim().parse().with_context(|| format!("srv's overlay address: {ip:?}"))?;
    Ok((client, server, ip))
}

fn route(system: System, client: Place, server: Place, addr: Ipv4Addr) -> Route {
    Route {
        system,
        scenario: Scenario::SandboxToSandbox,
        client,
        server,
        addr,
        iperf_port: IPERF_PORT,
        rr_port: RR_PORT,
    }
}

/// Measures `system` in a lab of its own.
fn measure_system(system: System, bins: &Binaries, d: &Durations) -> Result<Row> {
    let lab = MultiHost::create("xh", 2, bins)?;
    let mut sandboxes = Sandboxes(Vec::new());
    // Dropped (containers removed, daemons stopped) before the lab goes.
    let mut swarm_daemons = SwarmDaemons(Vec::new());
    let route = match system {
        System::Underlay => route(system, Place::ns(&lab.host(0).ns), Place::ns(&lab.host(1).ns), lab.host(1).ip),
        System::KernelVxlan => {
            let places = flannel(&lab, &mut sandboxes)?;
            route(system, places[0].0.clone(), places[1].0.clone(), places[1].1)
        }
        System::DockerSwarm => {
            let (client, server, addr) = swarm(&lab, &mut swarm_daemons.0)?;
            route(system, client, server, addr)
        }
        other => anyhow::bail!("{} is not a cross-host system", other.key()),
    };
    let mut procs = Procs::default();
    start_servers(&mut procs, &bins.lab, &route.server, Duration::from_secs(600))?;
    let mut row =
        Row { system, label: system.label(), figures: Figures::new(), encapsulated_packets: None, errors: Vec::new() };
    let host1 = Place::ns(&lab.host(0).ns);
    let vxlan_before = if system == System::KernelVxlan { Some(tx_packets(&host1, "flannel.1")?) } else { None };
    for metric in METRICS {
        match measure::measure(&route, metric, d, &bins.lab) {
            Ok(f) => row.figures.extend(f),
            Err(e) => row.errors.push(format!("{metric:?}: {e:#}")),
        }
    }
    if let Some(before) = vxlan_before {
        row.encapsulated_packets = Some(tx_packets(&host1, "flannel.1")? - before);
    }
    drop(procs);
    drop(sandboxes);
    drop(swarm_daemons);
    Ok(row)
}

pub const SYSTEMS: [System; 3] = [System::KernelVxlan, System::DockerSwarm, System::Underlay];

pub fn run(bins: &Binaries, args: CrossHostArgs) -> Result<i32> {
    let d = if args.smoke {
        Durations { iperf_secs: None, iperf_bytes: "2M", rr_ms: 50, conn_ms: 50, wire_frames: 0 }
    } else if args.quick {
        Durations { iperf_secs: Some(1), iperf_bytes: "", rr_ms: 300, conn_ms: 500, wire_frames: 0 }
    } else {
        Durations { iperf_secs: Some(3), iperf_bytes: "", rr_ms: 1000, conn_ms: 1000, wire_frames: 0 }
    };
    let systems: Vec<System> = if args.systems.is_empty() {
        SYSTEMS.to_vec()
    } else {
        args.systems
            .iter()
            .map(|s| {
                SYSTEMS.into_iter().find(|x| x.key() == s).with_context(|| {
                    let known: Vec<&str> = SYSTEMS.iter().map(|x| x.key()).collect();
                    format!("unknown cross-host system {s:?} (known: {})", known.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let mut rows = Vec::new();
    for system in systems {
        eprintln!("cross-host: {}", system.label());
        // A system that cannot be built is reported as such, with why.
        rows.push(measure_system(system, bins, &d).unwrap_or_else(|e| Row {
            system,
            label: system.label(),
            figures: Figures::new(),
            encapsulated_packets: None,
            errors: vec![format!("{e:#}")],
        }));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("crosshost.json"), serde_json::to_vec_pretty(&rows)?)?;
    let md = markdown(&rows);
    std::fs::write(args.out.join("crosshost.md"), &md)?;
    print!("{md}");
    Ok(if rows.iter().any(|r| !r.errors.is_empty()) { 1 } else { 0 })
}

const COLUMNS: [(&str, &str); 6] = [
    ("tput1_gbps", "TCP 1 stream Gbit/s"),
    ("tput4_gbps", "TCP 4 streams Gbit/s"),
    ("udp_pps", "UDP 64 B pkt/s"),
    ("tcp_rr_p50_us", "TCP RR p50 µs"),
    ("tcp_rr_p99_us", "TCP RR p99 µs"),
    ("conn_per_s", "new conn/s"),
];

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from("## Cross-host (sandbox on host 1 -> sandbox on host 2)\n\n| system |");
    for (_, label) in COLUMNS {
        out.push_str(&format!(" {label} |"));
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(COLUMNS.len()));
    out.push('\n');
    for r in rows {
        out.push_str(&format!("| {} |", r.label));
        for (key, _) in COLUMNS {
            match r.figures.get(key) {
                Some(v) if *v >= 100.0 => out.push_str(&format!(" {v:.0} |")),
                Some(v) => out.push_str(&format!(" {v:.2} |")),
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    for r in rows.iter().filter(|r| !r.errors.is_empty()) {
        out.push_str(&format!("\n{}: {}\n", r.label, r.errors.join("; ")));
    }
    out
}
