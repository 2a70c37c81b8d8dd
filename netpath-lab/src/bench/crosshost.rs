//! The cross-host bench: a sandbox on host 1 talks to a sandbox on host 2
//! of a multi-host lab (`multihost`), through each system side by side:
//!
//! - `netpath-overlay`: netpath's overlay driver, built through its command
//!   line with etcd in the lab (`systems::netpath_overlay`);
//! - `kernel-vxlan`: Flannel's VXLAN backend done by hand, no eBPF: on each
//!   host a bridge holding the host's /24 of 10.244.0.0/16, a VXLAN device
//!   (VNI 1, port 8472, no learning) holding the subnet's .0, and for every
//!   other host a route `via its .0 onlink`, a permanent neighbour entry
//!   (its VXLAN device's MAC) and an FDB entry (that MAC → its underlay
//!   address), exactly what flanneld programs;
//! - `docker-swarm`: Docker swarm's overlay;
//! - `underlay`: the bound, Flannel's `host-gw` backend: the same sandboxes,
//!   veths, bridge and forwarding as `kernel-vxlan`, with a plain route to
//!   the other host's underlay address instead of the tunnel. (It used to be
//!   host namespace to host namespace, a path of other devices and sockets
//!   than any overlay's, so not the bound of one.)
//!
//! Every system is built in a lab of its own and measured over the same
//! `Route` (client sandbox on host 1, servers in the sandbox on host 2).
use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;

use super::systems::{
    docker::{self, Dockerd},
    engine::Engine,
    netpath_overlay,
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
/// The multi-host lab's underlay links (its switch and the hosts' uplinks).
const UNDERLAY_MTU: u32 = 1500;

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
    /// Only these systems (netpath-overlay, kernel-vxlan, docker-swarm, underlay).
    #[arg(long = "system")]
    pub systems: Vec<String>,
    /// Rounds per metric (each system once per round); the report gives
    /// the median and the JSON every round. Default 3 (--smoke: 1).
    #[arg(long)]
    pub reps: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub system: System,
    pub label: &'static str,
    /// The median of each figure over the rounds.
    pub figures: Figures,
    /// Each figure of every round, in order.
    pub samples: BTreeMap<&'static str, Vec<f64>>,
    /// Packets host 1 put into the tunnel during the run (kernel-vxlan: its
    /// VXLAN device's TX; netpath-overlay: from_container's ENCAPSULATED):
    /// the traffic took the tunnel, not some other path.
    pub encapsulated_packets: Option<u64>,
    /// Packets host 2 took out of the tunnel during the run (kernel-vxlan:
    /// its VXLAN device's RX; netpath-overlay: from_overlay's DECAPSULATED).
    pub decapsulated_packets: Option<u64>,
    pub errors: Vec<String>,
}

/// (TX, RX) packets of `dev` in `place`, from `ip -s -j link`.
fn dev_packets(place: &Place, dev: &str) -> Result<(u64, u64)> {
    let out = place.run("ip", &["-s", "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    let get =
        |dir: &str| v[0]["stats64"][dir]["packets"].as_u64().with_context(|| format!("no {dir} counter for {dev}"));
    Ok((get("tx")?, get("rx")?))
}

/// How far the tunnel counters are: (host 1 encapsulated, host 2
/// decapsulated), for the systems that have a tunnel of their own.
fn tunnel_counters(system: System, lab: &MultiHost) -> Result<Option<(u64, u64)>> {
    Ok(match system {
        System::KernelVxlan => Some((
            dev_packets(&Place::ns(&lab.host(0).ns), "flannel.1")?.0,
            dev_packets(&Place::ns(&lab.host(1).ns), "flannel.1")?.1,
        )),
        System::NetpathOverlay => {
            Some((netpath_overlay::tunnel_counters(lab.host(0))?.0, netpath_overlay::tunnel_counters(lab.host(1))?.1))
        }
        _ => None,
    })
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

/// How the Flannel-style pod network crosses the underlay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// Flannel's `vxlan` backend: the kernel baseline.
    Vxlan,
    /// Flannel's `host-gw` backend: the same bridge, veths and routing,
    /// but a plain route to the other host's underlay address instead of
    /// the VXLAN device: the no-encapsulation bound through the same kind
    /// of devices, sandbox to sandbox.
    HostGw,
}

/// Builds a Flannel-style pod network on every host of `lab`, one sandbox
/// per host at .2 of its /24; returns the sandboxes' places.
fn flannel(lab: &MultiHost, backend: Backend, sandboxes: &mut Sandboxes) -> Result<Vec<(Place, Ipv4Addr)>> {
    // The sandbox MTU: what the VXLAN header leaves, or the underlay's own.
    let mtu = match backend {
        Backend::Vxlan => FLANNEL_MTU,
        Backend::HostGw => UNDERLAY_MTU,
    }
    .to_string();
    let mut places = Vec::new();
    for (i, h) in lab.hosts.iter().enumerate() {
        let [a, b, c] = flannel_subnet(i);
        let host = Place::ns(&h.ns);
        host.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        host.run("ip", &["link", "add", "cni0", "mtu", &mtu, "type", "bridge"])?;
        host.run("ip", &["addr", "add", &format!("{a}.{b}.{c}.1/24"), "dev", "cni0"])?;
        host.run("ip", &["link", "set", "cni0", "up"])?;
        match backend {
            Backend::Vxlan => flannel_vxlan(lab, i)?,
            Backend::HostGw => {
                for (j, other) in lab.hosts.iter().enumerate().filter(|(j, _)| *j != i) {
                    let [x, y, z] = flannel_subnet(j);
                    let (net, via) = (format!("{x}.{y}.{z}.0/24"), other.ip.to_string());
                    host.run("ip", &["route", "add", &net, "via", &via, "dev", multihost::HOST_UPLINK])?;
                }
            }
        }
        // The sandbox: a veth into the bridge.
        let ns = PathBuf::from(format!("/run/netns/{}-fl{}", lab.id, i + 1));
        netns::create_net(&ns)?;
        sandboxes.0.push(ns.clone());
        let peer = format!("fl{}peer", i + 1);
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

/// Host `i`'s VXLAN device (VNI 1, port 8472, no learning) holding its
/// subnet's .0, and for every other host a route `via its .0 onlink`, a
/// permanent neighbour entry and an FDB entry: what flanneld programs.
fn flannel_vxlan(lab: &MultiHost, i: usize) -> Result<()> {
    let [a, b, c] = flannel_subnet(i);
    let host = Place::ns(&lab.hosts[i].ns);
    let (port, local) = (FLANNEL_PORT.to_string(), lab.hosts[i].ip.to_string());
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
    Ok(())
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

/// One system built in a lab of its own, its servers running. Fields drop
/// in order: servers, Flannel sandboxes, swarm daemons, then the lab.
struct Built {
    system: System,
    route: Route,
    _servers: Procs,
    _sandboxes: Sandboxes,
    _swarm: SwarmDaemons,
    lab: MultiHost,
}

impl Built {
    fn new(system: System, bins: &Binaries) -> Result<Built> {
        // On failure these drop in reverse order: swarm and sandboxes
        // before the lab.
        let mut lab = MultiHost::create("xh", 2, bins)?;
        let mut sandboxes = Sandboxes(Vec::new());
        let mut swarm_daemons = SwarmDaemons(Vec::new());
        let route = match system {
            System::Underlay | System::KernelVxlan => {
                let backend = if system == System::Underlay { Backend::HostGw } else { Backend::Vxlan };
                let places = flannel(&lab, backend, &mut sandboxes)?;
                route(system, places[0].0.clone(), places[1].0.clone(), places[1].1)
            }
            System::NetpathOverlay => {
                let (client, server, addr) = netpath_overlay::build(&mut lab)?;
                route(system, client, server, addr)
            }
            System::DockerSwarm => {
                let (client, server, addr) = swarm(&lab, &mut swarm_daemons.0)?;
                route(system, client, server, addr)
            }
            other => anyhow::bail!("{} is not a cross-host system", other.key()),
        };
        let mut procs = Procs::default();
        start_servers(&mut procs, &bins.lab, &route.server, Duration::from_secs(3600))?;
        Ok(Built { system, route, _servers: procs, _sandboxes: sandboxes, _swarm: swarm_daemons, lab })
    }
}

/// The median of `v` (not empty).
pub const SYSTEMS: [System; 4] = [System::NetpathOverlay, System::KernelVxlan, System::DockerSwarm, System::Underlay];

pub fn run(bins: &Binaries, args: CrossHostArgs) -> Result<i32> {
    let d = if args.smoke {
        Durations { iperf_secs: None, iperf_bytes: "2M", rr_ms: 50, conn_ms: 50, wire_frames: 0 }
    } else if args.quick {
        Durations { iperf_secs: Some(1), iperf_bytes: "", rr_ms: 300, conn_ms: 500, wire_frames: 0 }
    } else {
        Durations { iperf_secs: Some(3), iperf_bytes: "", rr_ms: 1000, conn_ms: 1000, wire_frames: 0 }
    };
    let reps = args.reps.unwrap_or(if args.smoke { 1 } else { 3 });
    if reps == 0 {
        anyhow::bail!("--reps must be at least 1");
    }
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
    // Every system is built first and all stay up, so that each metric is
    // measured system after system, in rounds, within seconds: a load that
    // comes and goes on the machine (other work on 2 cores) then touches
    // them alike, where measuring one system entirely before building the
    // next gave one system a busy minute and another a quiet one.
    let mut rows = Vec::new();
    let mut built = Vec::new();
    for &system in &systems {
        eprintln!("cross-host: building {}", system.label());
        let mut row = Row {
            system,
            label: system.label(),
            figures: Figures::new(),
            samples: BTreeMap::new(),
            encapsulated_packets: None,
            decapsulated_packets: None,
            errors: Vec::new(),
        };
        // A system that cannot be built is reported as such, with why.
        match Built::new(system, bins) {
            Ok(b) => built.push((rows.len(), b)),
            Err(e) => row.errors.push(format!("{e:#}")),
        }
        rows.push(row);
    }
    let mut before = Vec::new();
    for (i, b) in &built {
        before.push(tunnel_counters(b.system, &b.lab).unwrap_or_else(|e| {
            rows[*i].errors.push(format!("tunnel counters: {e:#}"));
            None
        }));
    }
    for metric in METRICS {
        for rep in 0..reps {
            eprintln!("cross-host: {metric:?}, round {} of {reps}", rep + 1);
            // Each round starts with another system: none is always first.
            for k in 0..built.len() {
                let (i, b) = &built[(k + rep as usize) % built.len()];
                match measure::measure(&b.route, metric, &d, &bins.lab) {
                    Ok(f) => {
                        for (key, v) in f {
                            rows[*i].samples.entry(key).or_default().push(v);
                        }
                    }
                    Err(e) => rows[*i].errors.push(format!("{metric:?}: {e:#}")),
                }
            }
        }
    }
    for ((i, b), before) in built.iter().zip(before) {
        match (before, tunnel_counters(b.system, &b.lab)) {
            (Some((enc0, dec0)), Ok(Some((enc1, dec1)))) => {
                rows[*i].encapsulated_packets = Some(enc1.saturating_sub(enc0));
                rows[*i].decapsulated_packets = Some(dec1.saturating_sub(dec0));
            }
            (_, Err(e)) => rows[*i].errors.push(format!("tunnel counters: {e:#}")),
            _ => {}
        }
    }
    // Why an overlay stopped carrying traffic is in its agents' logs.
    for (i, b) in &built {
        if b.system == System::NetpathOverlay && !rows[*i].errors.is_empty() {
            for h in b.lab.hosts.iter().take(2) {
                let tail = multihost::log_tail(&h.roots.run.join("agent.log"));
                rows[*i].errors.push(format!("host {} agent.log: {tail}", h.index + 1));
            }
        }
    }
    drop(built);
    for row in &mut rows {
        row.figures = row.samples.iter().filter_map(|(k, v)| Some((*k, measure::Summary::of(v)?.median))).collect();
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("crosshost.json"), serde_json::to_vec_pretty(&rows)?)?;
    let md = markdown(&rows, reps);
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

/// Issue #12's goals for netpath's overlay: at least the kernel VXLAN
/// baseline on every metric, 0.9 of the bound on throughput. (figure,
/// against, at least),
/// each a ratio where above 1 is better for netpath (latency inverted).
const GOALS: [(&str, System, f64); 7] = [
    ("tput1_gbps", System::KernelVxlan, 1.0),
    ("tput4_gbps", System::KernelVxlan, 1.0),
    ("udp_pps", System::KernelVxlan, 1.0),
    ("tcp_rr_p99_us", System::KernelVxlan, 1.0),
    ("conn_per_s", System::KernelVxlan, 1.0),
    ("tput1_gbps", System::Underlay, 0.9),
    ("tput4_gbps", System::Underlay, 0.9),
];

/// netpath's figure over `against`'s, inverted for latencies (lower is
/// better): above 1 means netpath is better.
fn ratio(rows: &[Row], key: &str, against: System) -> Option<f64> {
    let get = |s: System| rows.iter().find(|r| r.system == s).and_then(|r| r.figures.get(key)).copied();
    let (ours, theirs) = (get(System::NetpathOverlay)?, get(against)?);
    if ours <= 0.0 || theirs <= 0.0 {
        return None;
    }
    Some(if key.ends_with("_us") { theirs / ours } else { ours / theirs })
}

pub fn markdown(rows: &[Row], reps: u32) -> String {
    let mut out = format!(
        "## Cross-host (sandbox on host 1 -> sandbox on host 2)\n\nMedian of {reps} round(s); each round measures \
         every system in turn, metric by metric (spread per round in the JSON's `samples`).\n\n| system |"
    );
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
    let tunnels: Vec<&Row> = rows.iter().filter(|r| r.encapsulated_packets.is_some()).collect();
    if !tunnels.is_empty() {
        out.push_str("\nTraffic took the tunnel (packets during the run):\n\n");
        out.push_str("| system | encapsulated on host 1 | decapsulated on host 2 |\n| --- | ---: | ---: |\n");
        for r in tunnels {
            let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            out.push_str(&format!("| {} | {} | {} |\n", r.label, n(r.encapsulated_packets), n(r.decapsulated_packets)));
        }
    }
    let goals: Vec<String> = GOALS
        .iter()
        .filter_map(|&(key, against, goal)| {
            let v = ratio(rows, key, against)?;
            let label = COLUMNS.iter().find(|(k, _)| *k == key).map_or(key, |(_, l)| l);
            let met = if v >= goal { "yes" } else { "no" };
            Some(format!("| {label} | {} | {v:.2}x | {goal:.1}x | {met} |\n", against.key()))
        })
        .collect();
    if !goals.is_empty() {
        out.push_str("\nnetpath overlay against the goals (ratio > 1: netpath better; latency as theirs/ours):\n\n");
        out.push_str("| figure | against | ratio | goal | met |\n| --- | --- | ---: | ---: | --- |\n");
        out.extend(goals);
    }
    for r in rows.iter().filter(|r| !r.errors.is_empty()) {
        out.push_str(&format!("\n{}: {}\n", r.label, r.errors.join("; ")));
    }
    out
}
