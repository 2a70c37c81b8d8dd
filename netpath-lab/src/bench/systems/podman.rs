//! Podman 4.3 with netavark (Debian's packages) as a system under test,
//! rootful and hermetic: every `podman` call runs in the lab host namespace
//! with its own storage, run and tmp roots, network config directory and a
//! `containers.conf` of its own (runc, cgroupfs, ulimits root may set, the
//! default network on the bench subnet). netavark puts `podman0` and its
//! `NETAVARK-*` iptables-nft chains in the lab host namespace; conmon holds
//! the published ports' sockets but the packets go through the DNAT rules.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{
    engine::{self, BUSYBOX, Engine, Footprint},
    iptables::rule_packets,
};
use crate::{
    bench::{
        catalog::{Scenario, System},
        measure::run_bounded,
        testbed::{Evidence, Place, Procs, Route, Testbed, routes_for, start_servers},
        topology::SUBNET,
    },
    fixture::{self, Binaries, Lab},
};

const PODMAN: &str = "/usr/bin/podman";
const NETAVARK: &str = "/usr/lib/podman/netavark";

pub fn available() -> bool {
    [PODMAN, NETAVARK, BUSYBOX, "/usr/sbin/runc", "/usr/bin/conmon"].iter().all(|p| Path::new(p).exists())
}

/// Files and directories podman 4.3 creates whatever its roots are (the
/// IPAM database, the image blob cache, runc's state root), files first.
const STRAY_PATHS: &[&str] = &[
    "/run/containers/networks/ipam.db",
    "/run/containers/networks",
    "/run/containers",
    "/var/lib/containers/cache/blob-info-cache-v1.boltdb",
    "/var/lib/containers/cache",
    "/var/lib/containers",
    "/run/runc",
];

/// The podman installation of one lab: its containers removed, mounts,
/// stray paths and cgroups gone when dropped.
pub struct Podman {
    dir: PathBuf,
    host: Place,
    footprint: Footprint,
}

impl Podman {
    pub fn new(lab: &Lab) -> Result<Podman> {
        Self::with_network(lab, &format!("network_backend = \"netavark\"\ndefault_subnet = \"{SUBNET}\"\n"))
    }

    /// An installation whose containers.conf `[network]` table holds
    /// `network` (the backend and its settings) and its own config directory.
    pub fn with_network(lab: &Lab, network: &str) -> Result<Podman> {
        let dir = lab.roots.state.parent().context("lab base")?.join("podman");
        for d in ["root", "run", "tmp", "net"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "{dir}/tmp"

[network]
{network}network_config_dir = "{dir}/net"
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("containers.conf"), conf)?;
        Ok(Podman {
            host: Place::ns(&lab.host_ns),
            footprint: Footprint::new(dir.clone(), format!("{}-podman", lab.id), STRAY_PATHS),
            dir,
        })
    }

    fn cmd(&self) -> Result<Command> {
        let mut c = self.host.cmd(PODMAN)?;
        c.arg("--root").arg(self.dir.join("root"));
        c.arg("--runroot").arg(self.dir.join("run"));
        c.arg("--tmpdir").arg(self.dir.join("tmp"));
        c.args(["--storage-driver", "overlay"]);
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c.env("TMPDIR", self.dir.join("tmp"));
        Ok(c)
    }

    /// Its private directory (roots, containers.conf, network configs in `net/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn podman(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd()?.args(args).output().context("running podman")?;
        fixture::check(&out, &format!("podman {}", args.join(" ")))
    }
}

impl Engine for Podman {
    fn program(&self) -> &'static str {
        "podman"
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        self.podman(args)
    }

    /// Without `-t 0` podman waits 10 s for `sleep` to end on SIGTERM.
    fn remove(&self, name: &str) -> Result<()> {
        self.podman(&["rm", "-f", "-t", "0", name]).map(drop)
    }

    fn root(&self) -> &Path {
        &self.dir
    }

    /// Podman has no daemon to set the cgroup parent: each run names it.
    fn run_options(&self) -> Vec<String> {
        vec!["--cgroup-parent".into(), format!("/{}", self.footprint.cgroup_parent)]
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Removes the containers' namespaces (/run/netns/netns-*), netavark
        // state and conmon processes; the rules die with the lab host.
        let removed = self.cmd().and_then(|mut rm| {
            rm.args(["rm", "-a", "-f", "-t", "0"]);
            run_bounded(rm, Duration::from_secs(60))
        });
        if let Err(e) = removed {
            eprintln!("warning: {e:#}");
        }
        // conmon (one per container, under init) names our roots.
        self.footprint.release();
    }
}

/// Podman with two containers (`srv` with the published ports, `cli`) on
/// its default network, servers in `srv` and outside.
pub fn testbed(bins: &Binaries, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let lab = Lab::create("bench-pm", bins)?;
    let podman = Podman::new(&lab)?;
    let (server, client, srv_ip) = engine::server_and_client(&podman)?;
    let outside = Place::ns(&lab.outside_ns);
    let host = Place::ns(&lab.host_ns);
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    let routes = routes_for(System::Podman, &client, (&server, srv_ip), &outside, &host, scenarios);
    let mut tb = Testbed::new(System::Podman, lab, routes, procs).with_evidence(System::Podman, NetavarkRules { host });
    tb.guards.push(Box::new(podman));
    Ok(tb)
}

/// The packet counters of netavark's rules.
struct NetavarkRules {
    host: Place,
}

impl Evidence for NetavarkRules {
    fn count(&self, scenario: Scenario, _: &Route) -> Result<u64> {
        let rule = netavark_rule_for(scenario).context("netavark has no rule for this scenario")?;
        Ok(rule_packets(&self.host.run("iptables-save", &["-c"])?, rule))
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
