//! Docker Engine 20.10 (Debian's docker.io) as a system under test: dockerd
//! runs hermetically in the lab host namespace (its own data root, exec
//! root, socket, cgroup parent; bridge on the bench subnet; `--dns` inside
//! the lab), with a busybox image built offline by `docker import`. The
//! bench's servers and clients run via setns in the containers' network
//! namespaces, so the image needs no iperf3.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::systems::{
    self, Evidence, GATEWAY, IPERF_PORT, PUB_IPERF, PUB_RR, Place, Procs, RR_PORT, Scenario, System, Testbed,
};
use crate::lab::{self, Lab};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub(super) const BUSYBOX: &str = "/bin/busybox";

pub fn available() -> bool {
    Path::new(DOCKERD).exists() && Path::new(BUSYBOX).exists() && Path::new("/usr/sbin/runc").exists()
}

fn client_bin() -> &'static str {
    if Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" }
}

/// A dockerd of this bench: stopped (containers removed, daemon ended by
/// PID, its cgroups removed) when dropped.
pub struct Dockerd {
    pub dir: PathBuf,
    pub host: Place,
    pid: Option<u32>,
    child: Option<std::process::Child>,
    cgroup_parent: String,
    /// Paths outside its roots dockerd creates (its trust key, the plugin
    /// socket directory) that did not exist before: removed at the end.
    created: Vec<PathBuf>,
}

/// Files and directories dockerd 20.10 makes whatever its roots are.
const STRAY_PATHS: &[&str] = &["/etc/docker/key.json", "/etc/docker", "/run/docker/plugins", "/run/docker"];

impl Dockerd {
    pub fn start(lab: &Lab, userland_proxy: bool) -> Result<Dockerd> {
        let dir = lab.roots.state.parent().context("lab base")?.join("docker");
        std::fs::create_dir_all(dir.join("root"))?;
        std::fs::create_dir_all(dir.join("exec"))?;
        let host = Place::ns(&lab.host_ns);
        let cgroup_parent = format!("{}-docker", lab.id);
        let mut cmd = host.cmd(DOCKERD)?;
        cmd.arg("--data-root").arg(dir.join("root"));
        cmd.arg("--exec-root").arg(dir.join("exec"));
        cmd.arg("--pidfile").arg(dir.join("dockerd.pid"));
        cmd.arg("-H").arg(format!("unix://{}", dir.join("docker.sock").display()));
        cmd.args(["--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs"]);
        cmd.args(["--default-runtime", "runc", "--default-ulimit", "nofile=20000:20000"]);
        cmd.args(["--bip", &format!("{GATEWAY}/24"), "--dns", &GATEWAY.to_string()]);
        cmd.args(["--cgroup-parent", &format!("/{cgroup_parent}")]);
        cmd.arg(format!("--userland-proxy={userland_proxy}"));
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        let created = not_yet_existing(STRAY_PATHS);
        let child = cmd.spawn().context("starting dockerd")?;
        let mut d = Dockerd { dir, host, pid: Some(child.id()), child: Some(child), cgroup_parent, created };
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.docker(&["version", "--format", "{{.Server.Version}}"]).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
                bail!("dockerd did not come up: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
            }
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                bail!("dockerd exited ({st}); see {}", d.dir.join("dockerd.log").display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(d)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(client_bin());
        c.arg("-H").arg(format!("unix://{}", self.dir.join("docker.sock").display()));
        c
    }

    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd().args(args).output().context("running docker")?;
        lab::check(&out, &format!("docker {}", args.join(" ")))
    }

    /// Imports a busybox image `bb` built offline from busybox-static.
    pub fn import_busybox(&self) -> Result<()> {
        let tar = busybox_rootfs_tar(&self.dir)?;
        self.docker(&["import", "-c", "CMD [\"/bin/sh\"]", &tar.to_string_lossy(), "bb:latest"])?;
        Ok(())
    }

    /// PIDs of docker-proxy processes (children of dockerd).
    pub fn proxy_pids(&self) -> Vec<u32> {
        all_pids()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let comm = s.split_once('(')?.1.split_once(')')?.0.to_string();
                        let ppid = s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok()?;
                        Some(comm == "docker-proxy" && Some(ppid) == self.pid)
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    fn stop(&mut self) {
        // In batches, each bounded: dockerd 20.10 has been seen to hang for
        // good in one `rm -f` of a hundred containers.
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            for batch in ids.chunks(20) {
                let mut rm = self.cmd();
                rm.args(["rm", "-f"]).args(batch);
                if let Err(e) = super::measure::run_bounded(rm, Duration::from_secs(30)) {
                    eprintln!("warning: removing containers: {e:#}; stopping dockerd instead");
                    break;
                }
            }
        }
        // containerd runs as dockerd's child and its shims under init, all
        // named by our exec root: ended by PID if dockerd does not end them.
        let ours = self.dir.to_string_lossy().into_owned();
        let helpers = processes_mentioning(&ours);
        if let (Some(pid), Some(mut child)) = (self.pid.take(), self.child.take()) {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_mentioning(&ours).iter().any(|p| helpers.contains(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in processes_mentioning(&ours).into_iter().filter(|p| helpers.contains(p)) {
            eprintln!("warning: ending leftover engine process {pid}");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        // Overlay mounts left by a daemon that did not stop cleanly.
        unmount_under(&self.dir);
        remove_created(&self.created);
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// A container engine's command line (docker, podman: the same `inspect`).
pub(super) trait Engine {
    fn cli(&self, args: &[&str]) -> Result<String>;

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

fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// PIDs of processes whose command line mentions `needle` (an engine's
/// private root: its containerd, shims and monitors).
pub(super) fn processes_mentioning(needle: &str) -> Vec<u32> {
    all_pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A tarball of a busybox-static rootfs (every applet linked), built in `dir`.
pub(super) fn busybox_rootfs_tar(dir: &Path) -> Result<PathBuf> {
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
pub(super) fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let root = dir.to_string_lossy().into_owned();
    let mut ours: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&root)).collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The paths of `candidates` that do not exist yet: what an engine will
/// create outside its roots and its owner must remove.
pub(super) fn not_yet_existing(candidates: &[&str]) -> Vec<PathBuf> {
    candidates.iter().map(PathBuf::from).filter(|p| !p.exists()).collect()
}

/// Removes what `not_yet_existing` listed, in its order (files, then their
/// directories once empty).
pub(super) fn remove_created(paths: &[PathBuf]) {
    for p in paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir(p);
        } else {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The cgroup parent in every hierarchy, deepest directories first. A
/// monitor (conmon) may take a moment to exit after its container is
/// removed and keeps its cgroup busy until then: retried for a few seconds.
pub(super) fn remove_cgroup_parent(name: &str) {
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

impl Engine for Dockerd {
    fn cli(&self, args: &[&str]) -> Result<String> {
        self.docker(args)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Docker Engine with two containers (`srv` with the published ports,
/// `cli`) on the default bridge, servers in `srv` and outside.
pub fn testbed(
    netpath_bin: &Path,
    userland_proxy: bool,
    scenarios: &[Scenario],
    lifetime: Duration,
) -> Result<Testbed> {
    let system = if userland_proxy { System::Docker } else { System::DockerNoProxy };
    let lab = Lab::create(if userland_proxy { "bench-dk" } else { "bench-dknp" }, netpath_bin)?;
    let dockerd = Dockerd::start(&lab, userland_proxy)?;
    dockerd.import_busybox()?;
    let (pi, pr) = (format!("{PUB_IPERF}:{IPERF_PORT}"), format!("{PUB_RR}:{RR_PORT}"));
    let (piu, pru) = (format!("{pi}/udp"), format!("{pr}/udp"));
    dockerd.docker(&[
        "run", "-d", "--name", "srv", "-p", &pi, "-p", &piu, "-p", &pr, "-p", &pru, "bb", "sleep", "1000000",
    ])?;
    dockerd.docker(&["run", "-d", "--name", "cli", "bb", "sleep", "1000000"])?;
    let server = Place::ns(dockerd.netns_of("srv")?);
    let client = Place::ns(dockerd.netns_of("cli")?);
    let srv_ip = dockerd.ip_of("srv")?;
    let outside = Place::ns(&lab.outside_ns);
    let host = Place::ns(&lab.host_ns);
    let mut procs = Procs::default();
    systems::start_servers(&mut procs, &lab, &server, lifetime)?;
    systems::start_servers(&mut procs, &lab, &outside, lifetime)?;
    let routes = systems::routes_for(system, &client, (&server, srv_ip), &outside, &host, scenarios);
    let proxies = dockerd.proxy_pids();
    let evidence = vec![(
        system,
        Evidence::Docker { host: host.clone(), proxies: if userland_proxy { proxies } else { Vec::new() } },
    )];
    Ok(Testbed::new(system, routes, evidence, host, procs, lab, vec![Box::new(dockerd)]))
}

/// The dockerd of a testbed built by `testbed`.
pub fn dockerd_of(tb: &Testbed) -> Option<&Dockerd> {
    tb.guards.iter().find_map(|g| g.downcast_ref::<Dockerd>())
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
