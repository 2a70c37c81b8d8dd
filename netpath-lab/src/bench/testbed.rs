//! What every system under test is built into: places where commands run,
//! the route a client takes to the servers per scenario, the background
//! processes and namespaces a testbed owns, and the evidence that traffic
//! went through the system under test. Each system builds its `Testbed` in
//! its own file under `systems/`.
use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netpath::netns;

use super::{
    catalog::{Scenario, System},
    topology::{IPERF_PORT, PUB_IPERF, PUB_RR, RR_PORT},
};
use crate::{
    fixture::{self, HOST_UPLINK_IP, Lab, OUTSIDE_IP},
    probes,
};

/// Where a command runs: a network namespace, optionally inside a cgroup.
#[derive(Clone, Debug)]
pub struct Place {
    pub ns: PathBuf,
    pub cgroup: Option<PathBuf>,
}

impl Place {
    pub fn ns(ns: impl Into<PathBuf>) -> Place {
        Place { ns: ns.into(), cgroup: None }
    }

    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let mut cmd = netns::Join::net(&self.ns).command(program)?;
        if let Some(cg) = &self.cgroup {
            fixture::join_cgroup(&mut cmd, cg)?;
        }
        Ok(cmd)
    }

    /// Runs `program args` here, failing with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.cmd(program)?.args(args).output().with_context(|| format!("running {program}"))?;
        fixture::check(&out, &format!("{program} {}", args.join(" ")))
    }

    /// Packets received on every interface but lo, from /proc/net/dev as
    /// this namespace sees it.
    pub fn rx_packets(&self) -> Result<u64> {
        let dev = self.run("cat", &["/proc/net/dev"])?;
        Ok(dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':'))
            .filter(|(name, _)| name.trim() != "lo")
            .filter_map(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum())
    }
}

/// How a client reaches the servers in one scenario.
#[derive(Clone, Debug)]
pub struct Route {
    pub system: System,
    pub scenario: Scenario,
    pub client: Place,
    pub server: Place,
    pub addr: Ipv4Addr,
    pub iperf_port: u16,
    pub rr_port: u16,
}

/// Background processes this bench started, killed by PID when dropped.
#[derive(Default)]
pub struct Procs(Vec<Child>);

impl Procs {
    /// Starts `cmd` and, when `announces`, waits for its "listening" line.
    pub fn spawn(&mut self, mut cmd: Command, announces: bool) -> Result<u32> {
        if announces {
            let (child, out) = probes::start_sink(cmd)?;
            // Keep the pipe drained in the background so the child never blocks on it.
            std::thread::spawn(move || std::io::copy(&mut out.into_inner(), &mut std::io::sink()));
            let pid = child.id();
            self.0.push(child);
            return Ok(pid);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|c| c.id()).collect()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Extra network namespaces of a lab (the kernel baselines' sandboxes).
#[derive(Default)]
pub struct ExtraNs(Vec<PathBuf>);

impl ExtraNs {
    /// Creates the network namespace `path`, removed when this is dropped.
    pub fn add(&mut self, path: PathBuf) -> Result<PathBuf> {
        netns::create_net(&path)?;
        self.0.push(path.clone());
        Ok(path)
    }
}

impl Drop for ExtraNs {
    fn drop(&mut self) {
        for ns in &self.0 {
            netpath::sandbox::kill_all_in(ns);
            if let Err(e) = netns::remove(ns) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// A counter that moves only when a scenario's traffic went through the
/// system under test (each system's own: data path counters, rule packet
/// counters, a proxy's work, packets at the server).
pub trait Evidence {
    /// The counter now; `route` is the scenario's route on this testbed.
    fn count(&self, scenario: Scenario, route: &Route) -> Result<u64>;
}

/// One built system, torn down when dropped (processes, then guards, then
/// extra namespaces, then the lab).
pub struct Testbed {
    pub system: System,
    pub routes: Vec<Route>,
    /// Evidence per system of this testbed (docker-proxy shares the iptables lab).
    pub evidence: Vec<(System, Box<dyn Evidence>)>,
    pub host: Place,
    pub procs: Procs,
    pub lab: Lab,
    /// Namespaces built beside the lab's (the kernel baselines' sandboxes).
    pub extra: Option<ExtraNs>,
    /// Other guards (dockerd, podman) dropped before the lab.
    pub guards: Vec<Box<dyn std::any::Any>>,
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.procs = Procs::default();
        self.guards.clear();
        self.extra.take();
    }
}

impl Testbed {
    /// A testbed of `system` in `lab`; evidence, extra namespaces and
    /// guards are added by the system's builder.
    pub fn new(system: System, lab: Lab, routes: Vec<Route>, procs: Procs) -> Testbed {
        let host = Place::ns(&lab.host_ns);
        Testbed { system, routes, evidence: Vec::new(), host, procs, lab, extra: None, guards: Vec::new() }
    }

    pub fn with_evidence(mut self, system: System, evidence: impl Evidence + 'static) -> Testbed {
        self.evidence.push((system, Box::new(evidence)));
        self
    }

    pub fn route(&self, system: System, scenario: Scenario) -> Option<&Route> {
        self.routes.iter().find(|r| r.system == system && r.scenario == scenario)
    }

    /// How far `system`'s evidence counter is for `scenario` (see `Evidence`).
    pub fn evidence(&self, system: System, scenario: Scenario) -> Result<u64> {
        let (_, ev) = self.evidence.iter().find(|(s, _)| *s == system).context("no evidence source for this system")?;
        let route = self.route(system, scenario).context("no route")?;
        ev.count(scenario, route)
    }
}

/// Starts iperf3 and the echo servers (TCP and UDP) at `server`.
pub fn start_servers(procs: &mut Procs, lab_bin: &std::path::Path, server: &Place, lifetime: Duration) -> Result<()> {
    let mut iperf = server.cmd("iperf3")?;
    iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
    procs.spawn(iperf, false)?;
    for proto in ["tcp", "udp"] {
        let mut rr = server.cmd(lab_bin)?;
        rr.args(["rr-serve", "--port", &RR_PORT.to_string(), "--proto", proto]);
        rr.args(["--timeout", &lifetime.as_secs().to_string()]);
        procs.spawn(rr, true)?;
    }
    wait_listening(server, IPERF_PORT)
}

/// Waits until something listens on TCP `port` at `place`.
pub fn wait_listening(place: &Place, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let needle = format!(":{port:04X} ");
    loop {
        let tcp = place.run("cat", &["/proc/net/tcp", "/proc/net/tcp6"])?;
        if tcp.lines().any(|l| l.contains(&needle) && l.split_whitespace().nth(3) == Some("0A")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} in {}", place.ns.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The routes of every scenario for one system: who connects to what.
pub fn routes_for(
    system: System,
    client: &Place,
    (server, server_ip): (&Place, Ipv4Addr),
    outside: &Place,
    host_local: &Place,
    scenarios: &[Scenario],
) -> Vec<Route> {
    let all = [
        (Scenario::SandboxToSandbox, client, server, server_ip, IPERF_PORT, RR_PORT),
        (Scenario::Masquerade, client, outside, OUTSIDE_IP, IPERF_PORT, RR_PORT),
        (Scenario::Published, outside, server, HOST_UPLINK_IP, PUB_IPERF, PUB_RR),
        (Scenario::Hairpin, client, server, HOST_UPLINK_IP, PUB_IPERF, PUB_RR),
        (Scenario::HostLocal, host_local, server, Ipv4Addr::LOCALHOST, PUB_IPERF, PUB_RR),
    ];
    all.into_iter()
        .filter(|(scenario, ..)| scenarios.contains(scenario) && system.scenarios().contains(scenario))
        .map(|(scenario, client, server, addr, iperf_port, rr_port)| Route {
            system,
            scenario,
            client: client.clone(),
            server: server.clone(),
            addr,
            iperf_port,
            rr_port,
        })
        .collect()
}
