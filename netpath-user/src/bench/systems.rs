//! Systems under test, each built in its own hermetic lab with the same
//! topology: a server sandbox (10.201.0.10) and a client sandbox
//! (10.201.0.20) on one network, the lab host, and the outside namespace
//! behind the uplink (198.18.0.1). Every system answers "how does a client
//! at X reach the servers at Y" per scenario, and "did traffic go through
//! me" (evidence counters).
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netpath_common::{Program, Reason};
use serde::Serialize;

use crate::{
    datapath::Datapath,
    lab::{self, HOST_UPLINK_IP, Lab, OUTSIDE_IP},
    netns,
};

pub const SUBNET: &str = "10.201.0.0/24";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 10);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 20);
/// Where filler mappings point (no sandbox has it: only rule/map size matters).
pub const FILLER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 99);
/// iperf3 (TCP and UDP) in every server.
pub const IPERF_PORT: u16 = 5201;
/// The echo server (TCP and UDP) of the latency and connection probes.
pub const RR_PORT: u16 = 7000;
/// Host ports published for them.
pub const PUB_IPERF: u16 = 9000;
pub const PUB_RR: u16 = 9001;
/// Host ports docker-proxy listens on in the iptables lab.
pub const PROXY_IPERF: u16 = 9100;
pub const PROXY_RR: u16 = 9101;
/// Filler host ports for the scaling runs start here.
pub const FILLER_FIRST: u16 = 10000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Netpath,
    /// netpath with XDP in front of TC on the uplink; the outside sends
    /// complete checksums, as a real wire does (TX offload off).
    NetpathXdp,
    /// netpath's TC path on that same wire, XDP detached: the comparison
    /// for the XDP row.
    NetpathTcSameWire,
    /// Docker 20.10's ruleset (userland-proxy=false) loaded with iptables-nft.
    IptablesNft,
    /// The same ruleset through iptables-legacy.
    IptablesLegacy,
    /// docker-proxy (Docker's userland proxy) for host-local access.
    DockerProxy,
    /// Docker Engine 20.10 itself, dockerd in the lab host.
    Docker,
    /// Docker Engine with --userland-proxy=false.
    DockerNoProxy,
    /// Podman 4.3 with netavark, rootful, in the lab host.
    Podman,
    /// Linux bridge and plain routing, no NAT, no rules: the bound.
    Bridge,
    /// Two namespaces joined by one veth pair: the bound for one hop.
    Veth,
}

impl System {
    pub fn key(self) -> &'static str {
        match self {
            System::Netpath => "netpath",
            System::NetpathXdp => "netpath-xdp",
            System::NetpathTcSameWire => "netpath-tc-same-wire",
            System::IptablesNft => "iptables-nft",
            System::IptablesLegacy => "iptables-legacy",
            System::DockerProxy => "docker-proxy",
            System::Docker => "docker",
            System::DockerNoProxy => "docker-no-proxy",
            System::Podman => "podman",
            System::Bridge => "bridge",
            System::Veth => "veth",
        }
    }

    pub const ALL: [System; 11] = [
        System::Netpath,
        System::NetpathXdp,
        System::NetpathTcSameWire,
        System::IptablesNft,
        System::IptablesLegacy,
        System::DockerProxy,
        System::Docker,
        System::DockerNoProxy,
        System::Podman,
        System::Bridge,
        System::Veth,
    ];

    /// The scenarios this system is measured in.
    pub fn scenarios(self) -> &'static [Scenario] {
        match self {
            System::Netpath | System::IptablesNft | System::IptablesLegacy | System::Docker | System::DockerNoProxy => {
                &Scenario::ALL
            }
            System::NetpathXdp | System::NetpathTcSameWire => &XDP_SCENARIOS,
            System::DockerProxy => &[Scenario::HostLocal],
            System::Podman => &super::podman::SCENARIOS,
            System::Bridge => {
                &[Scenario::SandboxToSandbox, Scenario::Masquerade, Scenario::Published, Scenario::HostLocal]
            }
            System::Veth => &[Scenario::SandboxToSandbox],
        }
    }

    pub fn parse(text: &str) -> Result<System> {
        System::ALL.into_iter().find(|s| s.key() == text).with_context(|| format!("unknown system {text:?}"))
    }

    pub fn label(self) -> &'static str {
        match self {
            System::Netpath => "netpath",
            System::NetpathXdp => "netpath, XDP on the uplink (sender TX csum offload off)",
            System::NetpathTcSameWire => "netpath, TC only (sender TX csum offload off)",
            System::IptablesNft => "iptables-nft",
            System::IptablesLegacy => "iptables-legacy",
            System::DockerProxy => "docker-proxy",
            System::Docker => "docker",
            System::DockerNoProxy => "docker (no userland proxy)",
            System::Podman => "podman + netavark",
            System::Bridge => "bridge, no NAT (bound)",
            System::Veth => "raw veth (bound)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Sandbox to sandbox on one network.
    SandboxToSandbox,
    /// Sandbox to the outside, masqueraded (the bound: routed, no NAT).
    Masquerade,
    /// Outside to a published port (the bound: routed to the sandbox).
    Published,
    /// Sandbox to a published port through a host address.
    Hairpin,
    /// Host process to 127.0.0.1:PORT (the bound: straight to the sandbox).
    HostLocal,
}

impl Scenario {
    pub const ALL: [Scenario; 5] =
        [Scenario::SandboxToSandbox, Scenario::Masquerade, Scenario::Published, Scenario::Hairpin, Scenario::HostLocal];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::SandboxToSandbox => "sandbox->sandbox",
            Scenario::Masquerade => "sandbox->outside (masquerade)",
            Scenario::Published => "outside->published port",
            Scenario::Hairpin => "hairpin",
            Scenario::HostLocal => "host->127.0.0.1:PORT",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Scenario::SandboxToSandbox => "s2s",
            Scenario::Masquerade => "masquerade",
            Scenario::Published => "published",
            Scenario::Hairpin => "hairpin",
            Scenario::HostLocal => "host-local",
        }
    }

    pub fn parse(text: &str) -> Result<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.key() == text).with_context(|| {
            format!(
                "unknown scenario {text:?} (known: {})",
                Scenario::ALL.iter().map(|s| s.key()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

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
            lab::join_cgroup(&mut cmd, cg)?;
        }
        Ok(cmd)
    }

    /// Runs `program args` here, failing with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.cmd(program)?.args(args).output().with_context(|| format!("running {program}"))?;
        lab::check(&out, &format!("{program} {}", args.join(" ")))
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
            let (child, out) = lab::start_sink(cmd)?;
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
pub struct ExtraNs(Vec<PathBuf>);

impl ExtraNs {
    fn add(&mut self, path: PathBuf) -> Result<PathBuf> {
        netns::create_net(&path)?;
        self.0.push(path.clone());
        Ok(path)
    }
}

impl Drop for ExtraNs {
    fn drop(&mut self) {
        for ns in &self.0 {
            crate::sandbox::kill_all_in(ns);
            if let Err(e) = netns::remove(ns) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// Evidence that traffic went through the system under test.
pub enum Evidence {
    Netpath(Datapath),
    /// The uplink's XDP program's own counters.
    NetpathXdp(Datapath),
    Iptables {
        host: Place,
        save: &'static str,
    },
    /// CPU ticks plus read/write system calls of these processes.
    Processes(Vec<u32>),
    /// Packets received in the server's namespace (the bounds).
    ServerRx,
    /// Docker Engine: its own rules' counters, and its docker-proxy
    /// processes for what the userland proxy carries (hairpin and
    /// host-local when it is on).
    Docker {
        host: Place,
        proxies: Vec<u32>,
    },
    /// Podman: the packet counters of netavark's rules.
    Netavark {
        host: Place,
    },
}

/// One built system, torn down when dropped (processes, then namespaces,
/// then the lab).
pub struct Testbed {
    pub system: System,
    pub routes: Vec<Route>,
    /// Evidence per system of this testbed (docker-proxy shares the iptables lab).
    pub evidence: Vec<(System, Evidence)>,
    pub host: Place,
    pub procs: Procs,
    pub lab: Lab,
    extra: Option<ExtraNs>,
    /// Other guards (dockerd) dropped before the lab.
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
    pub fn new(
        system: System,
        routes: Vec<Route>,
        evidence: Vec<(System, Evidence)>,
        host: Place,
        procs: Procs,
        lab: Lab,
        guards: Vec<Box<dyn std::any::Any>>,
    ) -> Testbed {
        Testbed { system, routes, evidence, host, procs, lab, extra: None, guards }
    }

    pub fn route(&self, system: System, scenario: Scenario) -> Option<&Route> {
        self.routes.iter().find(|r| r.system == system && r.scenario == scenario)
    }

    /// A counter that moves only when the scenario's traffic went through
    /// `system` (see each arm).
    pub fn evidence(&self, system: System, scenario: Scenario) -> Result<u64> {
        let (_, ev) = self.evidence.iter().find(|(s, _)| *s == system).context("no evidence source for this system")?;
        match ev {
            Evidence::Netpath(dp) => {
                let c = |p| dp.counters(p);
                Ok(match scenario {
                    Scenario::SandboxToSandbox => c(Program::FromContainer)?.packets(Reason::Forwarded),
                    Scenario::Masquerade => {
                        c(Program::ToUplink)?.packets(Reason::SnatNew) + c(Program::FromUplink)?.packets(Reason::Nat)
                    }
                    Scenario::Published => {
                        c(Program::FromUplink)?.packets(Reason::DnatNew) + c(Program::FromUplink)?.packets(Reason::Nat)
                    }
                    Scenario::Hairpin => {
                        c(Program::FromContainer)?.packets(Reason::DnatNew)
                            + c(Program::FromContainer)?.packets(Reason::Nat)
                    }
                    Scenario::HostLocal => c(Program::Socket)?.packets(Reason::SocketRedirect),
                })
            }
            Evidence::NetpathXdp(dp) => {
                let c = dp.counters(Program::XdpFromUplink)?;
                Ok(match scenario {
                    Scenario::Published => c.packets(Reason::DnatNew) + c.packets(Reason::Nat),
                    Scenario::Masquerade => c.packets(Reason::Nat),
                    _ => 0,
                })
            }
            Evidence::Iptables { host, save } => {
                let dump = host.run(save, &["-c"])?;
                Ok(rule_packets(&dump, iptables_rule_for(scenario)))
            }
            Evidence::Docker { host, proxies } => {
                if !proxies.is_empty() && matches!(scenario, Scenario::Hairpin | Scenario::HostLocal) {
                    Ok(proxies.iter().map(|p| cpu_ticks(*p).unwrap_or(0) + io_syscalls(*p)).sum())
                } else {
                    Ok(rule_packets(&host.run("iptables-save", &["-c"])?, iptables_rule_for(scenario)))
                }
            }
            Evidence::Netavark { host } => {
                let rule = netavark_rule_for(scenario).context("netavark has no rule for this scenario")?;
                Ok(rule_packets(&host.run("iptables-save", &["-c"])?, rule))
            }
            Evidence::Processes(pids) => Ok(pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0) + io_syscalls(*p)).sum()),
            Evidence::ServerRx => {
                let r = self.route(system, scenario).context("no route")?;
                r.server.rx_packets()
            }
        }
    }
}

/// The rule of Docker's ruleset each scenario's connections must hit:
/// (table, substrings of the rule line).
fn iptables_rule_for(scenario: Scenario) -> (&'static str, &'static [&'static str]) {
    match scenario {
        Scenario::SandboxToSandbox => ("filter", &["-A FORWARD -i docker0 -o docker0 -j ACCEPT"]),
        Scenario::Masquerade => ("nat", &["-A POSTROUTING -s 10.201.0.0/24 ! -o docker0 -j MASQUERADE"]),
        Scenario::Published | Scenario::Hairpin => ("nat", &["-A DOCKER ", "--to-destination 10.201.0."]),
        Scenario::HostLocal => ("nat", &["-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER"]),
    }
}

/// The rule of netavark 1.4's ruleset each scenario's connections must hit
/// (none between sandboxes: the bridge forwards those without netfilter).
fn netavark_rule_for(scenario: Scenario) -> Option<(&'static str, &'static [&'static str])> {
    match scenario {
        Scenario::SandboxToSandbox => None,
        Scenario::Masquerade => Some(("nat", &["! -d 224.0.0.0/4 -j MASQUERADE"])),
        Scenario::Published | Scenario::Hairpin | Scenario::HostLocal => {
            Some(("nat", &["-A NETAVARK-DN-", "-j DNAT --to-destination 10.201.0."]))
        }
    }
}

/// Sum of the packet counters of `iptables-save -c` lines in `table` that
/// contain every pattern.
pub fn rule_packets(dump: &str, (table, patterns): (&str, &[&str])) -> u64 {
    let mut current = "";
    let mut total = 0;
    for line in dump.lines() {
        if let Some(t) = line.strip_prefix('*') {
            current = t.trim();
            continue;
        }
        if current != table || !line.starts_with('[') || !patterns.iter().all(|p| line.contains(p)) {
            continue;
        }
        if let Some(n) = line.trim_start_matches('[').split(':').next().and_then(|n| n.parse::<u64>().ok()) {
            total += n;
        }
    }
    total
}

/// Read and write system calls a process made (/proc/PID/io syscr + syscw).
pub fn io_syscalls(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn netpath_bin(lab: &Lab) -> &Path {
    &lab.netpath_bin
}

/// Starts iperf3 and the echo servers (TCP and UDP) at `server`.
pub fn start_servers(procs: &mut Procs, lab: &Lab, server: &Place, lifetime: Duration) -> Result<()> {
    let mut iperf = server.cmd("iperf3")?;
    iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
    procs.spawn(iperf, false)?;
    for proto in ["tcp", "udp"] {
        let mut rr = server.cmd(netpath_bin(lab))?;
        rr.args(["lab", "rr-serve", "--port", &RR_PORT.to_string(), "--proto", proto]);
        rr.args(["--timeout", &lifetime.as_secs().to_string()]);
        procs.spawn(rr, true)?;
    }
    wait_listening(server, IPERF_PORT)
}

/// Waits until something listens on TCP `port` at `place`.
fn wait_listening(place: &Place, port: u16) -> Result<()> {
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

/// netpath: one network, two sandboxes, the server's ports published with
/// the CLI; servers run in the sandbox and outside.
pub fn netpath(
    netpath_bin: &Path,
    scenarios: &[Scenario],
    config: Option<serde_json::Value>,
    lifetime: Duration,
) -> Result<Testbed> {
    let lab = Lab::create("bench-np", netpath_bin)?;
    if let Some(cfg) = config {
        lab.configure(&cfg.to_string())?;
    }
    lab.netpath_ok(&["network", "create", "bench", "--subnet", SUBNET, "--gateway", &GATEWAY.to_string()])?;
    let (pi, pr) = (format!("{PUB_IPERF}:{IPERF_PORT}"), format!("{PUB_RR}:{RR_PORT}"));
    let (piu, pru) = (format!("{pi}/udp"), format!("{pr}/udp"));
    let srv = SERVER_IP.to_string();
    lab.netpath_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "bench",
        "--ip",
        &srv,
        "-p",
        &pi,
        "-p",
        &piu,
        "-p",
        &pr,
        "-p",
        &pru,
    ])?;
    lab.netpath_ok(&["run", "-d", "--name", "cli", "--network", "bench", "--ip", &CLIENT_IP.to_string()])?;
    let server = Place::ns(lab.roots.netns_dir().join("srv"));
    let client = Place::ns(lab.roots.netns_dir().join("cli"));
    let outside = Place::ns(&lab.outside_ns);
    let host = Place::ns(&lab.host_ns);
    let host_local = Place { ns: lab.host_ns.clone(), cgroup: Some(lab.roots.cgroup.clone()) };
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab, &server, lifetime)?;
    start_servers(&mut procs, &lab, &outside, lifetime)?;
    let routes = routes_for(System::Netpath, &client, (&server, SERVER_IP), &outside, &host_local, scenarios);
    Ok(Testbed {
        system: System::Netpath,
        routes,
        evidence: vec![(System::Netpath, Evidence::Netpath(lab.datapath()))],
        host,
        procs,
        extra: None,
        guards: Vec::new(),
        lab,
    })
}

/// The scenarios XDP on the uplink changes: what arrives from the outside.
pub const XDP_SCENARIOS: [Scenario; 2] = [Scenario::Published, Scenario::Masquerade];

/// netpath with `"uplink-xdp": "native"`: routes for the XDP row and, on the
/// same lab (the outside's TX checksum offload off, as XDP needs on veth),
/// for the TC row measured once XDP is detached.
pub fn netpath_xdp(netpath_bin: &Path, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let wanted: Vec<Scenario> = scenarios.iter().copied().filter(|s| XDP_SCENARIOS.contains(s)).collect();
    let cfg = serde_json::json!({ "uplink-xdp": "native" });
    let mut tb = netpath(netpath_bin, &wanted, Some(cfg), lifetime)?;
    tb.system = System::NetpathXdp;
    let tc: Vec<Route> = tb.routes.iter().map(|r| Route { system: System::NetpathTcSameWire, ..r.clone() }).collect();
    for r in &mut tb.routes {
        r.system = System::NetpathXdp;
    }
    tb.routes.extend(tc);
    tb.evidence = vec![
        (System::NetpathXdp, Evidence::NetpathXdp(tb.lab.datapath())),
        (System::NetpathTcSameWire, Evidence::Netpath(tb.lab.datapath())),
    ];
    Ok(tb)
}

/// The kernel's own tools: a Linux bridge `docker0` with two sandboxes on
/// veth pairs, as Docker builds it. With `rules`, Docker 20.10's ruleset
/// (userland-proxy=false) is loaded with that iptables flavour and
/// docker-proxy serves ports 9100/9101 on 127.0.0.1; without, it is the
/// no-NAT bound (outside routes to the sandbox subnet directly).
pub fn kernel(
    netpath_bin: &Path,
    rules: Option<System>,
    scenarios: &[Scenario],
    lifetime: Duration,
) -> Result<Testbed> {
    let tag = if rules.is_some() { "bench-ipt" } else { "bench-br" };
    let lab = Lab::create(tag, netpath_bin)?;
    let mut extra = ExtraNs(Vec::new());
    let host = Place::ns(&lab.host_ns);
    let outside = Place::ns(&lab.outside_ns);
    let srv_ns = extra.add(PathBuf::from(format!("/run/netns/{}-srv", lab.id)))?;
    let cli_ns = extra.add(PathBuf::from(format!("/run/netns/{}-cli", lab.id)))?;
    host.run("ip", &["link", "add", "docker0", "type", "bridge"])?;
    host.run("ip", &["addr", "add", &format!("{GATEWAY}/24"), "dev", "docker0"])?;
    host.run("ip", &["link", "set", "docker0", "up"])?;
    for (ns, ip, veth) in [(&srv_ns, SERVER_IP, "vethsrv"), (&cli_ns, CLIENT_IP, "vethcli")] {
        let name = ns.file_name().and_then(|n| n.to_str()).context("netns name")?;
        host.run("ip", &["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name])?;
        host.run("ip", &["link", "set", veth, "master", "docker0", "up"])?;
        let p = Place::ns(ns);
        p.run("ip", &["link", "set", "lo", "up"])?;
        p.run("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        p.run("ip", &["link", "set", "eth0", "up"])?;
        p.run("ip", &["route", "add", "default", "via", &GATEWAY.to_string()])?;
    }
    host.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    let server = Place::ns(&srv_ns);
    let client = Place::ns(&cli_ns);
    let mut procs = Procs::default();
    let mut routes;
    let mut evidence = Vec::new();
    match rules {
        Some(flavour) => {
            let restore = restore_bin(flavour);
            load_rules(&host, restore, 0)?;
            host.run("sysctl", &["-qw", "net.ipv4.conf.docker0.route_localnet=1"])?;
            routes = routes_for(flavour, &client, (&server, SERVER_IP), &outside, &host, scenarios);
            evidence.push((flavour, Evidence::Iptables { host: host.clone(), save: save_bin(flavour) }));
            if scenarios.contains(&Scenario::HostLocal) && Path::new(DOCKER_PROXY).exists() {
                let mut pids = Vec::new();
                for (proto, hp, cp) in [
                    ("tcp", PROXY_IPERF, IPERF_PORT),
                    ("udp", PROXY_IPERF, IPERF_PORT),
                    ("tcp", PROXY_RR, RR_PORT),
                    ("udp", PROXY_RR, RR_PORT),
                ] {
                    let mut cmd = host.cmd(DOCKER_PROXY)?;
                    cmd.args(["-proto", proto, "-host-ip", "127.0.0.1", "-host-port", &hp.to_string()]);
                    cmd.args(["-container-ip", &SERVER_IP.to_string(), "-container-port", &cp.to_string()]);
                    give_fd3(&mut cmd)?;
                    pids.push(procs.spawn(cmd, false)?);
                }
                wait_listening(&host, PROXY_RR)?;
                routes.push(Route {
                    system: System::DockerProxy,
                    scenario: Scenario::HostLocal,
                    client: host.clone(),
                    server: server.clone(),
                    addr: Ipv4Addr::LOCALHOST,
                    iperf_port: PROXY_IPERF,
                    rr_port: PROXY_RR,
                });
                evidence.push((System::DockerProxy, Evidence::Processes(pids)));
            }
        }
        None => {
            let host_net = format!("{}", HOST_UPLINK_IP);
            outside.run("ip", &["route", "add", SUBNET, "via", &host_net])?;
            routes = Vec::new();
            let mut add = |scenario, client: &Place, server: &Place, addr| {
                if scenarios.contains(&scenario) {
                    routes.push(Route {
                        system: System::Bridge,
                        scenario,
                        client: client.clone(),
                        server: server.clone(),
                        addr,
                        iperf_port: IPERF_PORT,
                        rr_port: RR_PORT,
                    });
                }
            };
            add(Scenario::SandboxToSandbox, &client, &server, SERVER_IP);
            add(Scenario::Masquerade, &client, &outside, OUTSIDE_IP);
            add(Scenario::Published, &outside, &server, SERVER_IP);
            add(Scenario::HostLocal, &host, &server, SERVER_IP);
            evidence.push((System::Bridge, Evidence::ServerRx));
        }
    }
    start_servers(&mut procs, &lab, &server, lifetime)?;
    if scenarios.contains(&Scenario::Masquerade) {
        start_servers(&mut procs, &lab, &outside, lifetime)?;
    }
    Ok(Testbed {
        system: rules.unwrap_or(System::Bridge),
        routes,
        evidence,
        host,
        procs,
        extra: Some(extra),
        guards: Vec::new(),
        lab,
    })
}

/// The one-hop bound: the lab's own uplink veth pair, client in the host,
/// servers outside.
pub fn veth(netpath_bin: &Path, lifetime: Duration) -> Result<Testbed> {
    let lab = Lab::create("bench-veth", netpath_bin)?;
    let host = Place::ns(&lab.host_ns);
    let outside = Place::ns(&lab.outside_ns);
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab, &outside, lifetime)?;
    Ok(Testbed {
        system: System::Veth,
        routes: vec![Route {
            system: System::Veth,
            scenario: Scenario::SandboxToSandbox,
            client: host.clone(),
            server: outside,
            addr: OUTSIDE_IP,
            iperf_port: IPERF_PORT,
            rr_port: RR_PORT,
        }],
        evidence: vec![(System::Veth, Evidence::ServerRx)],
        host,
        procs,
        extra: None,
        guards: Vec::new(),
        lab,
    })
}

/// docker-proxy reports readiness to dockerd on fd 3 and exits at once
/// when it is not open: give it /dev/null there.
fn give_fd3(cmd: &mut Command) -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::options().write(true).open("/dev/null")?;
    // SAFETY: dup2 is async-signal-safe; the file stays open in the closure.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::dup2(null.as_raw_fd(), 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

pub const DOCKER_PROXY: &str = "/usr/sbin/docker-proxy";

pub fn restore_bin(flavour: System) -> &'static str {
    if flavour == System::IptablesLegacy { "iptables-legacy-restore" } else { "iptables-nft-restore" }
}

pub fn save_bin(flavour: System) -> &'static str {
    if flavour == System::IptablesLegacy { "iptables-legacy-save" } else { "iptables-nft-save" }
}

pub fn iptables_bin(flavour: System) -> &'static str {
    if flavour == System::IptablesLegacy { "iptables-legacy" } else { "iptables-nft" }
}

/// One published TCP/UDP mapping of the ruleset.
pub struct Mapping {
    pub proto: &'static str,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The mappings of the measured server, after `fillers` filler ports
/// (so the measured ones sit at the end of each chain, as for the most
/// recently started container).
pub fn mappings(fillers: usize) -> Vec<Mapping> {
    let mut m: Vec<Mapping> = (0..fillers)
        .map(|i| Mapping { proto: "tcp", host_port: FILLER_FIRST + i as u16, ip: FILLER_IP, port: 80 })
        .collect();
    for proto in ["tcp", "udp"] {
        m.push(Mapping { proto, host_port: PUB_IPERF, ip: SERVER_IP, port: IPERF_PORT });
        m.push(Mapping { proto, host_port: PUB_RR, ip: SERVER_IP, port: RR_PORT });
    }
    m
}

/// The rules Docker 20.10 writes for one port (userland-proxy=false):
/// nat DNAT, filter ACCEPT, nat hairpin MASQUERADE, as `-A` lines without
/// the `-A`/`-t` prefix: (table, chain, rule).
pub fn port_rules(m: &Mapping) -> [(&'static str, &'static str, String); 3] {
    let (p, ip, cp, hp) = (m.proto, m.ip, m.port, m.host_port);
    [
        ("nat", "DOCKER", format!("-p {p} -m {p} --dport {hp} -j DNAT --to-destination {ip}:{cp}")),
        ("filter", "DOCKER", format!("-d {ip}/32 ! -i docker0 -o docker0 -p {p} -m {p} --dport {cp} -j ACCEPT")),
        ("nat", "POSTROUTING", format!("-s {ip}/32 -d {ip}/32 -p {p} -m {p} --dport {cp} -j MASQUERADE")),
    ]
}

/// Docker 20.10's full ruleset for one bridge `docker0` on 10.201.0.0/24
/// with the given mappings, in iptables-restore format.
pub fn ruleset(mappings: &[Mapping]) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 10.201.0.0/24 ! -o docker0 -j MASQUERADE\n\
         -A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE\n",
    );
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o docker0 -j DOCKER\n-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n\
         -A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
         -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\n",
    );
    let mut dnat = String::new();
    for m in mappings {
        let [(_, _, d), (_, _, a), (_, _, h)] = port_rules(m);
        dnat.push_str(&format!("-A DOCKER {d}\n"));
        filter.push_str(&format!("-A DOCKER {a}\n"));
        nat.push_str(&format!("-A POSTROUTING {h}\n"));
    }
    nat.push_str(&dnat);
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

/// Loads the ruleset with `fillers` filler ports; returns how long
/// iptables-restore took.
pub fn load_rules(host: &Place, restore: &str, fillers: usize) -> Result<Duration> {
    use std::io::Write;
    let text = ruleset(&mappings(fillers));
    let started = Instant::now();
    let mut child = host.cmd(restore)?.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    lab::check(&out, restore)?;
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_three_rules_per_port_and_counts_parse() {
        let text = ruleset(&mappings(3));
        assert_eq!(text.matches("-j DNAT").count(), 7);
        assert_eq!(text.matches("--dport 80 -j ACCEPT").count(), 3);
        let dump = "*nat\n[5:300] -A DOCKER -p tcp -m tcp --dport 9000 -j DNAT --to-destination 10.201.0.10:5201\n\
                    [2:100] -A DOCKER -p tcp -m tcp --dport 10000 -j DNAT --to-destination 10.201.0.99:80\nCOMMIT\n\
                    *filter\n[9:900] -A DOCKER -d 10.201.0.10/32 -j ACCEPT --to-destination 10.201.0.1\nCOMMIT\n";
        assert_eq!(rule_packets(dump, iptables_rule_for(Scenario::Published)), 7, "nat DNAT rules only");
    }
}
