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
    docker::{self, BUSYBOX, Engine},
    systems::{
        self, Evidence, IPERF_PORT, PUB_IPERF, PUB_RR, Place, Procs, RR_PORT, SUBNET, Scenario, System, Testbed,
    },
};
use crate::lab::{self, Lab};

const PODMAN: &str = "/usr/bin/podman";
const NETAVARK: &str = "/usr/lib/podman/netavark";

/// What podman measures: its published-port path and what rides on the
/// same rules. Sandbox to sandbox is the kernel bridge, measured already.
pub const SCENARIOS: [Scenario; 4] =
    [Scenario::Masquerade, Scenario::Published, Scenario::Hairpin, Scenario::HostLocal];

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
    cgroup_parent: String,
    created: Vec<PathBuf>,
}

impl Podman {
    pub fn new(lab: &Lab) -> Result<Podman> {
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
network_backend = "netavark"
default_subnet = "{SUBNET}"
network_config_dir = "{dir}/net"
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("containers.conf"), conf)?;
        Ok(Podman {
            host: Place::ns(&lab.host_ns),
            cgroup_parent: format!("{}-podman", lab.id),
            created: docker::not_yet_existing(STRAY_PATHS),
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

    pub fn podman(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd()?.args(args).output().context("running podman")?;
        lab::check(&out, &format!("podman {}", args.join(" ")))
    }

    /// `podman run -d` of busybox sleeping, under this lab's cgroup parent.
    pub fn run_sleeper(&self, name: &str, ports: &[String]) -> Result<()> {
        let parent = format!("/{}", self.cgroup_parent);
        let mut args = vec!["run", "-d", "--name", name, "--cgroup-parent", &parent];
        for p in ports {
            args.extend(["-p", p.as_str()]);
        }
        args.extend(["bb", "sleep", "1000000"]);
        self.podman(&args).map(drop)
    }
}

impl Engine for Podman {
    fn cli(&self, args: &[&str]) -> Result<String> {
        self.podman(args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Removes the containers' namespaces (/run/netns/netns-*), netavark
        // state and conmon processes; the rules die with the lab host.
        let removed = self.cmd().and_then(|mut rm| {
            rm.args(["rm", "-a", "-f", "-t", "0"]);
            super::measure::run_bounded(rm, Duration::from_secs(60))
        });
        if let Err(e) = removed {
            eprintln!("warning: {e:#}");
        }
        // conmon (one per container, under init) names our roots.
        let ours = self.dir.to_string_lossy().into_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !docker::processes_mentioning(&ours).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in docker::processes_mentioning(&ours) {
            eprintln!("warning: ending leftover podman process {pid}");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        docker::unmount_under(&self.dir);
        docker::remove_created(&self.created);
        docker::remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// Podman with two containers (`srv` with the published ports, `cli`) on
/// its default network, servers in `srv` and outside.
pub fn testbed(netpath_bin: &Path, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let lab = Lab::create("bench-pm", netpath_bin)?;
    let podman = Podman::new(&lab)?;
    let tar = docker::busybox_rootfs_tar(&podman.dir)?;
    podman.podman(&["import", "-c", "CMD [\"/bin/sh\"]", &tar.to_string_lossy(), "bb"])?;
    let (pi, pr) = (format!("{PUB_IPERF}:{IPERF_PORT}"), format!("{PUB_RR}:{RR_PORT}"));
    let ports = [format!("{pi}/udp"), format!("{pr}/udp"), pi, pr];
    podman.run_sleeper("srv", &ports)?;
    podman.run_sleeper("cli", &[])?;
    let server = Place::ns(podman.netns_of("srv")?);
    let client = Place::ns(podman.netns_of("cli")?);
    let srv_ip = podman.ip_of("srv")?;
    let outside = Place::ns(&lab.outside_ns);
    let host = Place::ns(&lab.host_ns);
    let mut procs = Procs::default();
    systems::start_servers(&mut procs, &lab, &server, lifetime)?;
    systems::start_servers(&mut procs, &lab, &outside, lifetime)?;
    let wanted: Vec<Scenario> = scenarios.iter().copied().filter(|s| SCENARIOS.contains(s)).collect();
    let routes = systems::routes_for(System::Podman, &client, (&server, srv_ip), &outside, &host, &wanted);
    let evidence = vec![(System::Podman, Evidence::Netavark { host: host.clone() })];
    Ok(Testbed::new(System::Podman, routes, evidence, host, procs, lab, vec![Box::new(podman)]))
}
