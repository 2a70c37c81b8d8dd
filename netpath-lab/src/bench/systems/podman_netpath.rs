//! Podman 4.3 with the CNI backend and netpath's CNI plugin (`netpath-cni`)
//! as a system under test: the same hermetic installation as
//! [`super::podman`], with `network_backend = "cni"`, a plugin directory
//! holding only `netpath-cni` and a conflist `{"type": "netpath"}` whose
//! `netpath` key names the lab's netpath roots. Containers run with
//! `--network NETWORK`; their forwarding, masquerade and published ports are
//! netpath's eBPF (conmon still holds a socket per published port, as with
//! netavark, but no packet goes through it).
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::json;

use super::{
    engine::{self, Engine},
    podman::Podman,
};
use crate::{
    bench::{
        catalog::{Scenario, System},
        testbed::{Place, Procs, Testbed, routes_for, start_servers},
        topology::SUBNET,
    },
    fixture::{Binaries, Lab},
};

/// The conflist's network name (netpath creates it on the first ADD).
pub const NETWORK: &str = "np";

/// `netpath-cni`, next to the netpath binary under test.
pub fn plugin(bins: &Binaries) -> PathBuf {
    bins.netpath.with_file_name("netpath-cni")
}

pub fn available(bins: &Binaries) -> bool {
    super::podman::available() && plugin(bins).exists()
}

/// Podman on netpath: the installation and the network's conflist.
pub struct PodmanNetpath {
    pub podman: Podman,
}

impl PodmanNetpath {
    /// Podman whose one network `NETWORK` is netpath's, on `subnet`.
    pub fn new(lab: &Lab, bins: &Binaries, subnet: &str) -> Result<PodmanNetpath> {
        let base = lab.roots.state.parent().context("lab base")?.join("podman");
        let plugins = base.join("cni-bin");
        std::fs::create_dir_all(&plugins)?;
        std::fs::copy(plugin(bins), plugins.join("netpath"))
            .with_context(|| format!("installing {}", plugin(bins).display()))?;
        let network = format!("network_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n", plugins.display());
        let podman = Podman::with_network(lab, &network)?;
        let r = &lab.roots;
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [{
                "type": "netpath",
                "subnet": subnet,
                "netpath": {
                    "stateDir": r.state, "runDir": r.run, "bpfDir": r.bpf, "config": r.config, "cgroup": r.cgroup,
                },
                "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
            }],
        });
        std::fs::write(podman.dir().join("net").join(format!("{NETWORK}.conflist")), conflist.to_string())?;
        Ok(PodmanNetpath { podman })
    }

    pub fn podman(&self, args: &[&str]) -> Result<String> {
        self.podman.podman(args)
    }
}

impl Engine for PodmanNetpath {
    fn program(&self) -> &'static str {
        "podman"
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        self.podman.podman(args)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.podman.remove(name)
    }

    fn root(&self) -> &Path {
        self.podman.dir()
    }

    fn run_options(&self) -> Vec<String> {
        let mut o = self.podman.run_options();
        o.extend(["--network".to_string(), NETWORK.to_string()]);
        o
    }

    /// On a user-defined network the address is under `Networks`.
    fn ip_of(&self, name: &str) -> Result<Ipv4Addr> {
        let ip = self.cli(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name])?;
        ip.trim().parse().with_context(|| format!("address of {name}: {ip:?}"))
    }
}

/// The bench's Podman testbed on netpath's CNI plugin: `srv` and `cli` on
/// the netpath network, servers in `srv` and outside.
pub fn testbed(bins: &Binaries, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let lab = Lab::create("bench-pmnp", bins)?;
    let podman = PodmanNetpath::new(&lab, bins, SUBNET)?;
    let (server, client, srv_ip) = engine::server_and_client(&podman)?;
    let outside = Place::ns(&lab.outside_ns);
    // Host-local access is netpath's socket programs, which act for
    // sockets in the instance's cgroup.
    let host = Place { ns: lab.host_ns.clone(), cgroup: Some(lab.roots.cgroup.clone()) };
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    let routes = routes_for(System::PodmanNetpath, &client, (&server, srv_ip), &outside, &host, scenarios);
    // The evidence is netpath's own counters, as for netpath's row.
    let datapath = lab.datapath();
    let mut tb = Testbed::new(System::PodmanNetpath, lab, routes, procs)
        .with_evidence(System::PodmanNetpath, super::netpath::TcCounters(datapath));
    tb.guards.push(Box::new(podman));
    Ok(tb)
}

/// The engine of a Podman testbed (netavark or netpath CNI), for the
/// scaling runs.
pub fn engine_of(tb: &Testbed) -> Option<&dyn Engine> {
    tb.guards.iter().find_map(|g| {
        g.downcast_ref::<Podman>()
            .map(|p| p as &dyn Engine)
            .or_else(|| g.downcast_ref::<PodmanNetpath>().map(|p| p as &dyn Engine))
    })
}
