//! Docker Engine 20.10 (Debian's docker.io) as a system under test: dockerd
//! runs hermetically in the lab host namespace (its own data root, exec
//! root, socket, cgroup parent; bridge on the bench subnet; `--dns` inside
//! the lab), with a busybox image built offline by `docker import`. The
//! bench's servers and clients run via setns in the containers' network
//! namespaces, so the image needs no iperf3.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    docker_proxy,
    engine::{self, BUSYBOX, Engine, Footprint, all_pids},
    iptables::{docker_rule_for, rule_packets},
};
use crate::{
    bench::{
        catalog::{Scenario, System},
        measure::run_bounded,
        testbed::{Evidence, Place, Procs, Route, Testbed, routes_for, start_servers},
        topology::GATEWAY,
    },
    fixture::{self, Binaries, Lab},
};

pub const DOCKERD: &str = "/usr/sbin/dockerd";

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
    /// A file keeping the machine's `/run/docker/plugins` non-empty while
    /// this dockerd's private mount sits on it (see `start_with`).
    keep: Option<PathBuf>,
    child: Option<std::process::Child>,
    footprint: Footprint,
}

/// Files and directories dockerd 20.10 makes whatever its roots are (its
/// trust key, the plugin socket directory).
const STRAY_PATHS: &[&str] = &["/etc/docker/key.json", "/etc/docker", "/run/docker/plugins", "/run/docker"];

impl Dockerd {
    pub fn start(lab: &Lab, userland_proxy: bool) -> Result<Dockerd> {
        Self::start_with(lab, userland_proxy, None)
    }

    /// With `plugins`, dockerd runs in a private mount namespace whose
    /// `/run/docker/plugins` is that directory (bind-mounted): it finds the
    /// network plugins whose sockets are there, and the machine's own
    /// plugin directory stays out of reach both ways.
    pub fn start_with(lab: &Lab, userland_proxy: bool, plugins: Option<&Path>) -> Result<Dockerd> {
        let dir = lab.roots.state.parent().context("lab base")?.join("docker");
        Dockerd::start_in(&lab.host_ns, dir, format!("{}-docker", lab.id), userland_proxy, plugins)
    }

    /// A dockerd in the network namespace `host_ns`, its roots and socket
    /// under `dir`, its containers under cgroup `cgroup_parent` (unique per
    /// lab), with `plugins` as [`Dockerd::start_with`] has it.
    pub fn start_in(
        host_ns: &Path,
        dir: PathBuf,
        cgroup_parent: String,
        userland_proxy: bool,
        plugins: Option<&Path>,
    ) -> Result<Dockerd> {
        std::fs::create_dir_all(dir.join("root"))?;
        std::fs::create_dir_all(dir.join("exec"))?;
        let host = Place::ns(host_ns);
        let mut cmd = match plugins {
            None => host.cmd(DOCKERD)?,
            Some(plugins) => {
                let mut cmd = host.cmd("unshare")?;
                cmd.args(["-m", "--propagation", "private", "sh", "-c"]);
                cmd.arg(format!(
                    "mkdir -p /run/docker/plugins && mount --bind '{}' /run/docker/plugins && exec \"$0\" \"$@\"",
                    plugins.display()
                ));
                cmd.arg(DOCKERD);
                cmd
            }
        };
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
        let footprint = Footprint::new(dir.clone(), cgroup_parent.clone(), STRAY_PATHS);
        // The private mount sits on the machine's /run/docker/plugins, and
        // the kernel lets another namespace remove a directory that is only
        // a mount point here (detaching the mount): another lab's dockerd
        // removing what it thinks it created would take the plugin away.
        // A file there keeps the directory non-empty until this one stops.
        let keep = match plugins {
            Some(_) => {
                let keep = PathBuf::from("/run/docker/plugins").join(format!(".in-use-by-{cgroup_parent}"));
                std::fs::create_dir_all("/run/docker/plugins")?;
                std::fs::write(&keep, b"")?;
                Some(keep)
            }
            None => None,
        };
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(keep) = &keep {
                    let _ = std::fs::remove_file(keep);
                }
                return Err(e).context("starting dockerd");
            }
        };
        let mut d = Dockerd { dir, host, pid: Some(child.id()), keep, child: Some(child), footprint };
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
        fixture::check(&out, &format!("docker {}", args.join(" ")))
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
                if let Err(e) = run_bounded(rm, Duration::from_secs(30)) {
                    eprintln!("warning: removing containers: {e:#}; stopping dockerd instead");
                    break;
                }
            }
        }
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
        // containerd (dockerd's child) and the shims (under init) name our
        // exec root: ended by PID if dockerd did not end them.
        if let Some(keep) = self.keep.take() {
            let _ = std::fs::remove_file(keep);
        }
        self.footprint.release();
    }
}

impl Engine for Dockerd {
    fn program(&self) -> &'static str {
        "docker"
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        self.docker(args)
    }

    fn root(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Docker Engine with two containers (`srv` with the published ports,
/// `cli`) on the default bridge, servers in `srv` and outside.
pub fn testbed(bins: &Binaries, userland_proxy: bool, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let system = if userland_proxy { System::Docker } else { System::DockerNoProxy };
    let lab = Lab::create(if userland_proxy { "bench-dk" } else { "bench-dknp" }, bins)?;
    let dockerd = Dockerd::start(&lab, userland_proxy)?;
    let (server, client, srv_ip) = engine::server_and_client(&dockerd)?;
    let outside = Place::ns(&lab.outside_ns);
    let host = Place::ns(&lab.host_ns);
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    let routes = routes_for(system, &client, (&server, srv_ip), &outside, &host, scenarios);
    let proxies = if userland_proxy { dockerd.proxy_pids() } else { Vec::new() };
    let mut tb = Testbed::new(system, lab, routes, procs).with_evidence(system, DockerWork { host, proxies });
    tb.guards.push(Box::new(dockerd));
    Ok(tb)
}

/// Docker Engine's own rules' counters, and its docker-proxy processes'
/// work for what the userland proxy carries (hairpin and host-local when
/// it is on).
struct DockerWork {
    host: Place,
    proxies: Vec<u32>,
}

impl Evidence for DockerWork {
    fn count(&self, scenario: Scenario, _: &Route) -> Result<u64> {
        if !self.proxies.is_empty() && matches!(scenario, Scenario::Hairpin | Scenario::HostLocal) {
            Ok(docker_proxy::work(&self.proxies))
        } else {
            Ok(rule_packets(&self.host.run("iptables-save", &["-c"])?, docker_rule_for(scenario)))
        }
    }
}

/// The dockerd of a testbed built by `testbed`.
pub fn dockerd_of(tb: &Testbed) -> Option<&Dockerd> {
    tb.guards.iter().find_map(|g| g.downcast_ref::<Dockerd>())
}
