//! What the container engines of the bench (Docker, Podman) share: their
//! command line's `inspect`, an offline busybox image, and the footprint
//! they leave outside their private roots (helper processes, mounts, stray
//! paths, cgroups), undone when they go.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::bench::{
    testbed::Place,
    topology::{IPERF_PORT, PUB_IPERF, PUB_RR, RR_PORT},
};

pub const BUSYBOX: &str = "/bin/busybox";

/// What an engine leaves on the machine beyond its lab: processes and
/// mounts naming its private root `dir`, paths it creates outside it (those
/// that did not exist before), its cgroup parent.
pub struct Footprint {
    pub dir: PathBuf,
    pub cgroup_parent: String,
    created: Vec<PathBuf>,
}

impl Footprint {
    /// Notes which of `stray_paths` (files before their directories) do not
    /// exist yet: the engine about to start will create them.
    pub fn new(dir: PathBuf, cgroup_parent: String, stray_paths: &[&str]) -> Footprint {
        let created = stray_paths.iter().map(PathBuf::from).filter(|p| !p.exists()).collect();
        Footprint { dir, cgroup_parent, created }
    }

    /// Once the engine has removed its containers (and its daemon ended):
    /// helpers still naming `dir` (containerd, shims, conmon) get a few
    /// seconds to exit and are then ended by PID; mounts below `dir`,
    /// created paths and the cgroup parent go.
    pub fn release(&self) {
        let ours = self.dir.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_mentioning(&ours).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in processes_mentioning(&ours) {
            eprintln!("warning: ending leftover engine process {pid}");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        unmount_under(&self.dir);
        for p in &self.created {
            if p.is_dir() {
                let _ = std::fs::remove_dir(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// A container engine's command line (docker and podman take the same
/// `import`, `run` and `inspect`), and the bench's two containers on it.
pub trait Engine {
    /// The command line's name (`docker`, `podman`), for the report's notes.
    fn program(&self) -> &'static str;

    fn cli(&self, args: &[&str]) -> Result<String>;

    /// `rm -f` of one container.
    fn remove(&self, name: &str) -> Result<()> {
        self.cli(&["rm", "-f", name]).map(drop)
    }

    /// The engine's private root, where the image tarball is built.
    fn root(&self) -> &Path;

    /// Options every `run` of this engine takes (its cgroup parent, when
    /// the daemon does not set it).
    fn run_options(&self) -> Vec<String> {
        Vec::new()
    }

    /// Imports a busybox image `bb` built offline from busybox-static.
    fn import_busybox(&self) -> Result<()> {
        let tar = busybox_rootfs_tar(self.root())?;
        self.cli(&["import", "-c", "CMD [\"/bin/sh\"]", &tar.to_string_lossy(), "bb"]).map(drop)
    }

    /// `run -d` of busybox sleeping, publishing `ports`.
    fn run_sleeper(&self, name: &str, ports: &[String]) -> Result<()> {
        let options = self.run_options();
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(options.iter().map(String::as_str));
        for p in ports {
            args.extend(["-p", p.as_str()]);
        }
        args.extend(["bb", "sleep", "1000000"]);
        self.cli(&args).map(drop)
    }

    /// The network namespace of a running container.
    fn netns_of(&self, name: &str) -> Result<PathBuf> {
        let pid = self.cli(&["inspect", "-f", "{{.State.Pid}}", name])?;
        Ok(PathBuf::from(format!("/proc/{}/ns/net", pid.trim())))
    }

    fn ip_of(&self, name: &str) -> Result<Ipv4Addr> {
        let ip = self.cli(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])?;
        ip.trim().parse().with_context(|| format!("address of {name}: {ip:?}"))
    }
}

/// The bench's containers on an engine: `srv` publishing the iperf and
/// echo ports (TCP and UDP) and `cli`; their places and the server's address.
pub(super) fn server_and_client(e: &impl Engine) -> Result<(Place, Place, Ipv4Addr)> {
    e.import_busybox()?;
    let (pi, pr) = (format!("{PUB_IPERF}:{IPERF_PORT}"), format!("{PUB_RR}:{RR_PORT}"));
    let ports = [format!("{pi}/udp"), format!("{pr}/udp"), pi, pr];
    e.run_sleeper("srv", &ports)?;
    e.run_sleeper("cli", &[])?;
    Ok((Place::ns(e.netns_of("srv")?), Place::ns(e.netns_of("cli")?), e.ip_of("srv")?))
}

pub(super) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// PIDs of processes whose command line mentions `needle` (an engine's
/// private root: its containerd, shims and monitors).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    all_pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A tarball of a busybox-static rootfs (every applet linked), built in `dir`.
fn busybox_rootfs_tar(dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
    let ok = Command::new("chroot").arg(&rootfs).args(["/bin/busybox", "--install", "-s"]).status()?;
    if !ok.success() {
        bail!("busybox --install failed");
    }
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status()?;
    if !ok.success() {
        bail!("tar of the rootfs failed");
    }
    Ok(tar)
}

/// Unmounts everything mounted below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let root = dir.to_string_lossy().into_owned();
    let mut ours: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&root)).collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The cgroup parent in every hierarchy, deepest directories first. A
/// monitor (conmon) may take a moment to exit after its container is
/// removed and keeps its cgroup busy until then: retried for a few seconds.
fn remove_cgroup_parent(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = false;
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let dir = h.path().join(name);
                remove_cgroup_tree(&dir);
                left |= dir.exists();
            }
        }
        if !left || Instant::now() > deadline {
            if left {
                eprintln!("warning: cgroup {name} still busy, left in place");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
