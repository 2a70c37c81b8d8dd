//! The hermetic lab: a "host" namespace where netpath runs, an "outside"
//! namespace behind an uplink veth (the host's default route points there),
//! and helpers to run netpath and the probes inside. Tests, the bench and the
//! demo all build their world with this; nothing touches the machine's own
//! interfaces, routes or firewall.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};
use netpath::{datapath::Datapath, link::Rtnl, netns, paths::Roots};

/// Where the lab's namespaces are pinned, so `ip netns` sees them too.
const NETNS_RUN_DIR: &str = "/run/netns";
pub const HOST_UPLINK: &str = "uplink0";
pub const OUTSIDE_UPLINK: &str = "eth0";
pub const HOST_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const UPLINK_PREFIX: u8 = 24;
pub const FAR_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const FAR_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

/// The two programs a lab runs: the product, driven through its command
/// line, and the rig, whose probes run inside the lab's namespaces.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `netpath` binary under test.
    pub netpath: PathBuf,
    /// The `netpath-lab` binary (probes: `netpath-lab PROBE ARGS`).
    pub lab: PathBuf,
}

impl Binaries {
    pub const NETPATH_ENV: &str = "NETPATH_BIN";
    pub const LAB_ENV: &str = "NETPATH_LAB_BIN";

    /// `$NETPATH_BIN` and `$NETPATH_LAB_BIN` where set, else `netpath` and
    /// `netpath-lab` in `dir` (a cargo profile directory, e.g. target/release).
    pub fn from_env_or(dir: &Path) -> Binaries {
        let pick = |env: &str, name: &str| std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| dir.join(name));
        Binaries { netpath: pick(Self::NETPATH_ENV, "netpath"), lab: pick(Self::LAB_ENV, "netpath-lab") }
    }
}

/// Where in a lab a probe runs.
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    Sandbox(&'a str),
    Host,
    /// The lab host, inside the cgroup netpath's socket programs watch.
    HostCgroup,
    Outside,
    Far,
}

pub struct Lab {
    pub id: String,
    pub host_ns: PathBuf,
    pub outside_ns: PathBuf,
    pub roots: Roots,
    pub netpath_bin: PathBuf,
    pub lab_bin: PathBuf,
    base: PathBuf,
    torn_down: bool,
}

impl Lab {
    /// Builds a new lab named after `tag`, unique per process and call.
    pub fn create(tag: &str, bins: &Binaries) -> Result<Lab> {
        let id = unique_id("nplab", tag);
        let base = std::env::temp_dir().join(&id);
        let roots = Roots::under(
            &base,
            PathBuf::from("/sys/fs/bpf").join(format!("netpath-{id}")),
            Roots::default_cgroup().join(&id),
        );
        let mut lab = Lab {
            host_ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-host")),
            outside_ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-out")),
            netpath_bin: bins.netpath.clone(),
            lab_bin: bins.lab.clone(),
            roots,
            base,
            id,
            torn_down: false,
        };
        // On failure `lab` drops here and removes what was made.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.base)?;
        self.configure("{}")?;
        std::fs::create_dir(&self.roots.cgroup)
            .with_context(|| format!("creating cgroup {}", self.roots.cgroup.display()))?;
        netns::create_net(&self.host_ns)?;
        netns::create_net(&self.outside_ns)?;
        self.wire_host()
    }

    /// The lab host's devices as at boot: loopback up, the uplink to the
    /// outside with its address and the default route.
    fn wire_host(&self) -> Result<()> {
        let outside = std::fs::File::open(&self.outside_ns)?;
        netns::run_in(&self.host_ns, || {
            let rtnl = Rtnl::new()?;
            rtnl.loopback_up()?;
            let (up, peer) = rtnl.add_veth(HOST_UPLINK, "uplinkpeer", 1500)?;
            rtnl.move_to_netns(peer, &outside)?;
            rtnl.add_address(up, HOST_UPLINK_IP, UPLINK_PREFIX)?;
            rtnl.set_up(up)?;
            rtnl.add_default_route(OUTSIDE_IP)
        })?;
        netns::run_in(&self.outside_ns, || {
            let rtnl = Rtnl::new()?;
            rtnl.loopback_up()?;
            let idx = rtnl.require_index("uplinkpeer")?;
            rtnl.rename(idx, OUTSIDE_UPLINK)?;
            rtnl.add_address(idx, OUTSIDE_IP, UPLINK_PREFIX)?;
            rtnl.set_up(idx)
        })
    }

    /// Writes the instance's daemon.json. Unless `json` names resolvers, the
    /// outside namespace is the upstream resolver: nothing a lab does may
    /// query the machine's own (off-box) resolver.
    pub fn configure(&self, json: &str) -> Result<()> {
        let config = lab_config(json, OUTSIDE_IP)?;
        let xdp = config.get("uplink-xdp").and_then(|v| v.as_str()).is_some_and(|m| m != "off");
        // The outside stands for a real wire, whose frames carry complete
        // checksums; a veth's partial ones do not survive XDP redirection.
        if xdp {
            netns::run_in(&self.outside_ns, || netpath::ethtool::set_tx_checksum(OUTSIDE_UPLINK, false))?;
        }
        std::fs::write(&self.roots.config, serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    /// A `netpath` command that runs in the lab host with the lab's roots.
    pub fn netpath<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Command> {
        netpath_in(&self.host_ns, &self.netpath_bin, &self.roots, args)
    }

    /// Runs netpath, failing with its stderr unless it succeeds; returns stdout.
    pub fn netpath_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.netpath(args)?.output().context("running netpath")?;
        check(&out, &format!("netpath {}", show_args(args)))
    }

    /// `netpath-lab PROBE ...` at `at`, without going through netpath's
    /// own exec (so the probe sees exactly that namespace).
    pub fn probe(&self, at: At, args: &[&str]) -> Result<Command> {
        let bin = &self.lab_bin;
        let mut cmd = match at {
            At::Sandbox(name) => self.sandbox_cmd(name, bin),
            At::Host => self.host_cmd(bin),
            At::HostCgroup => self.host_cmd_in_cgroup(bin),
            At::Outside => self.outside_cmd(bin),
            At::Far => self.far_cmd(bin),
        }?;
        cmd.args(args);
        Ok(cmd)
    }

    pub fn host_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netns::Join::net(&self.host_ns).command(program)
    }

    /// A command in the lab host that runs inside the lab's cgroup, where
    /// netpath's socket programs apply.
    pub fn host_cmd_in_cgroup(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let mut cmd = self.host_cmd(program)?;
        join_cgroup(&mut cmd, &self.roots.cgroup)?;
        Ok(cmd)
    }

    pub fn outside_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netns::Join::net(&self.outside_ns).command(program)
    }

    /// A command in sandbox `name`'s network namespace (without netpath).
    pub fn sandbox_cmd(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netns::Join::net(self.roots.netns_dir().join(name)).command(program)
    }

    pub fn datapath(&self) -> Datapath {
        Datapath::at(&self.roots.bpf)
    }

    /// Adds a "far" host behind the outside namespace, reached over a link
    /// of `mtu` bytes: the outside becomes a router with a narrow next hop.
    pub fn add_far_host(&self, mtu: u32) -> Result<Ipv4Addr> {
        let far_ns = self.far_ns();
        netns::create_net(&far_ns)?;
        let far = std::fs::File::open(&far_ns)?;
        netns::run_in(&self.outside_ns, || {
            let rtnl = Rtnl::new()?;
            let (near, peer) = rtnl.add_veth("far0", "farpeer", mtu)?;
            rtnl.move_to_netns(peer, &far)?;
            rtnl.add_address(near, FAR_ROUTER_IP, 24)?;
            rtnl.set_up(near)?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling forwarding outside")
        })?;
        netns::run_in(&far_ns, || {
            let rtnl = Rtnl::new()?;
            rtnl.loopback_up()?;
            let idx = rtnl.require_index("farpeer")?;
            rtnl.add_address(idx, FAR_IP, 24)?;
            rtnl.set_up(idx)?;
            rtnl.add_default_route(FAR_ROUTER_IP)
        })?;
        Ok(FAR_IP)
    }

    /// A layer-2 segment hanging off the lab host: interface `seg0` in the
    /// host (no address), a peer namespace on the other end holding `addr`.
    /// For drivers that put sandboxes straight on a segment (macvlan).
    pub fn add_segment(&self, addr: Ipv4Addr, prefix: u8) -> Result<&'static str> {
        let seg_ns = self.segment_ns();
        netns::create_net(&seg_ns)?;
        let seg = std::fs::File::open(&seg_ns)?;
        netns::run_in(&self.host_ns, || {
            let rtnl = Rtnl::new()?;
            let (near, peer) = rtnl.add_veth("seg0", "segpeer", 1500)?;
            rtnl.move_to_netns(peer, &seg)?;
            rtnl.set_up(near)
        })?;
        netns::run_in(&seg_ns, || {
            let rtnl = Rtnl::new()?;
            rtnl.loopback_up()?;
            let idx = rtnl.require_index("segpeer")?;
            rtnl.add_address(idx, addr, prefix)?;
            rtnl.set_up(idx)
        })?;
        Ok("seg0")
    }

    /// A simulated reboot of the lab host: every process in it and in the
    /// sandboxes is killed, the sandboxes' namespaces and the host
    /// namespace go (with every device, program attachment and route in
    /// them), the run directory and the bpf pins are emptied; the state
    /// directory and the config stay. The host namespace then comes back
    /// as at boot (`wire_host`), its uplink to the same outside.
    pub fn reboot(&self) -> Result<()> {
        for dir in [self.roots.netns_dir(), self.roots.uts_dir()] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                netpath::sandbox::kill_all_in(&entry.path());
                netns::remove(&entry.path())?;
            }
        }
        netpath::sandbox::kill_all_in(&self.host_ns);
        // Deleting one end of the uplink pair deletes both at once; left to
        // the host namespace's teardown, the outside's end would linger.
        netns::run_in(&self.outside_ns, || Rtnl::new()?.delete_by_name(OUTSIDE_UPLINK))?;
        netns::remove(&self.host_ns)?;
        for dir in [&self.roots.run, &self.roots.bpf] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
            }
        }
        netns::create_net(&self.host_ns)?;
        self.wire_host()
    }

    pub fn segment_ns(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(format!("{}-seg", self.id))
    }

    pub fn far_ns(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(format!("{}-far", self.id))
    }

    pub fn far_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netns::Join::net(self.far_ns()).command(program)
    }

    /// Runs `f` with an rtnetlink handle in the lab host namespace.
    pub fn in_host<T: Send>(&self, f: impl FnOnce(&Rtnl) -> Result<T> + Send) -> Result<T> {
        netns::run_in(&self.host_ns, || f(&Rtnl::new()?))
    }

    /// Removes everything: netpath's objects (through netpath itself), any
    /// process left in the lab's namespaces, the namespaces and directories.
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        system_reset(&self.roots, || self.netpath(&["system", "reset"]), "netpath system reset", &mut errors);
        let (far, seg) = (self.far_ns(), self.segment_ns());
        for ns in [&self.host_ns, &self.outside_ns, &far, &seg] {
            netpath::sandbox::kill_all_in(ns);
            if let Err(e) = netns::remove(ns) {
                errors.push(format!("{e:#}"));
            }
        }
        remove_roots(&self.roots, &self.base, &mut errors);
        if errors.is_empty() { Ok(()) } else { bail!("lab teardown: {}", errors.join("; ")) }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Makes `cmd` join the cgroup v2 directory `cgroup` before it execs.
pub fn join_cgroup(cmd: &mut Command, cgroup: &Path) -> Result<()> {
    let procs = std::fs::File::options()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    // SAFETY: write(2) is async-signal-safe; "0" moves the caller itself.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            use std::io::Write;
            (&procs).write_all(b"0")
        });
    }
    Ok(())
}

/// A name for a lab (namespaces, directories, pins) unique per process and
/// call, and across runs: `KIND-TAG-PID-SEQ` and two random bytes.
pub(crate) fn unique_id(kind: &str, tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut rnd = [0u8; 2];
    getrandom::fill(&mut rnd).expect("kernel randomness");
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{kind}-{tag}-{}-{seq}{:02x}{:02x}", std::process::id(), rnd[0], rnd[1])
}

/// A lab host's `netpath system reset` (`reset`), where netpath ever ran
/// (its state exists); a failure is added to `errors` under `what`.
pub(crate) fn system_reset(
    roots: &Roots,
    reset: impl FnOnce() -> Result<Command>,
    what: &str,
    errors: &mut Vec<String>,
) {
    if !roots.state.exists() {
        return;
    }
    match reset().and_then(|mut c| Ok(c.output()?)) {
        Ok(out) if out.status.success() => {}
        Ok(out) => errors.push(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => errors.push(format!("{what}: {e:#}")),
    }
}

/// Removes what a lab host's netpath roots leave once its processes are
/// gone: its cgroup, its bpffs directory and the lab's `base` directory.
/// Keeps going; every failure is added to `errors`.
pub(crate) fn remove_roots(roots: &Roots, base: &Path, errors: &mut Vec<String>) {
    if roots.cgroup.exists() {
        if let Err(e) = std::fs::remove_dir(&roots.cgroup) {
            errors.push(format!("removing {}: {e}", roots.cgroup.display()));
        }
    }
    for dir in [&roots.bpf, base] {
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        }
    }
}

/// `netpath ARGS` in network namespace `ns`, with the instance's `roots`
/// (a lab host of [`Lab`] or of the multi-host lab).
pub fn netpath_in<S: AsRef<std::ffi::OsStr>>(ns: &Path, bin: &Path, roots: &Roots, args: &[S]) -> Result<Command> {
    let mut cmd = netns::Join::net(ns).command(bin)?;
    cmd.args(args);
    for (k, v) in roots.env() {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// A lab's daemon.json from `json`: unless it names resolvers, the lab's
/// outside namespace (at `outside`) is the upstream resolver, so nothing a
/// lab does may query the machine's own (off-box) one.
pub fn lab_config(json: &str, outside: Ipv4Addr) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
    config.entry("dns").or_insert_with(|| serde_json::json!([outside.to_string()]));
    Ok(config)
}

pub fn show_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Stdout of a finished command, or an error carrying its stderr.
pub fn check(out: &Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
