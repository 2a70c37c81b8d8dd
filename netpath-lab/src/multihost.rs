//! The multi-host lab: several netpath "hosts" on one underlay switch, for
//! the overlay and the cluster store. An underlay namespace holds a bridge
//! (the switch, with an address of its own where the lab's etcd listens);
//! each host namespace is joined to it by a veth (`uplink0`, its underlay
//! address, default route to the outside) and has its own netpath roots,
//! exactly as a `Lab` host; an outside namespace on the same switch stands
//! for the rest of the world (the hosts' default gateway). Nothing touches
//! the machine's own interfaces; `teardown` (also on drop) removes
//! everything and keeps going past failures.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netpath::{datapath::Datapath, link::Rtnl, netns, network::overlay, paths::Roots};
use netpath_common::RemoteEndpointKey;

use crate::fixture::{Binaries, check, lab_config, netpath_in, remove_roots, show_args, system_reset, unique_id};

const NETNS_RUN_DIR: &str = "/run/netns";
pub const UNDERLAY_BRIDGE: &str = "ulbr0";
/// The host's one interface, to the underlay (the name `Lab` hosts use).
pub const HOST_UPLINK: &str = crate::fixture::HOST_UPLINK;
pub const OUTSIDE_IF: &str = "eth0";
pub const UNDERLAY_PREFIX: u8 = 24;
/// The outside namespace on the underlay: every host's default gateway.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
/// The switch's own address, where the lab's etcd listens.
pub const STORE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 254);
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;

/// Host `i` (0-based) of a multi-host lab sits at 192.168.200.(11 + i).
pub fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, 11 + u8::try_from(i).expect("a handful of hosts"))
}

/// A remote endpoint key as an error names it: address and VNI.
fn shown(key: &RemoteEndpointKey) -> String {
    match key.family {
        netpath_common::addr_family::IPV4 => {
            let a = key.addr;
            format!("{} in VNI {}", Ipv4Addr::new(a[0], a[1], a[2], a[3]), key.vni)
        }
        _ => format!("{:?} in VNI {}", std::net::Ipv6Addr::from(key.addr), key.vni),
    }
}

/// Where a probe runs in a multi-host lab.
#[derive(Clone, Copy, Debug)]
pub enum Where<'a> {
    /// Sandbox `name` on host `i`.
    Sandbox(usize, &'a str),
    Host(usize),
    Outside,
}

/// One netpath host of a multi-host lab.
pub struct Host {
    pub index: usize,
    pub ns: PathBuf,
    pub roots: Roots,
    /// Its underlay (VTEP) address.
    pub ip: Ipv4Addr,
    netpath_bin: PathBuf,
    base: PathBuf,
}

impl Host {
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netns::Join::net(&self.ns).command(program)
    }

    /// `netpath ARGS` in this host, with its roots.
    pub fn netpath<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Command> {
        netpath_in(&self.ns, &self.netpath_bin, &self.roots, args)
    }

    /// Runs netpath, failing with its stderr unless it succeeds; returns stdout.
    pub fn netpath_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.netpath(args)?.output().context("running netpath")?;
        check(&out, &format!("host {}: netpath {}", self.index, show_args(args)))
    }

    /// A command in sandbox `name` of this host.
    pub fn sandbox_cmd(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netns::Join::net(self.roots.netns_dir().join(name)).command(program)
    }

    /// Writes this host's daemon.json. Unless `json` names resolvers, the
    /// outside namespace is the upstream one (never the machine's own).
    pub fn configure(&self, json: &str) -> Result<()> {
        std::fs::write(&self.roots.config, serde_json::to_vec_pretty(&lab_config(json, OUTSIDE_IP)?)?)?;
        Ok(())
    }

    pub fn datapath(&self) -> Datapath {
        Datapath::at(&self.roots.bpf)
    }

    /// The VNI the cluster gave overlay network `network`, as this host's
    /// `netpath network inspect` shows it.
    pub fn overlay_vni(&self, network: &str) -> Result<u32> {
        let inspect = self.netpath_ok(&["network", "inspect", network])?;
        let doc: serde_json::Value = serde_json::from_str(&inspect)
            .with_context(|| format!("host {}: network inspect {network}: {inspect}", self.index))?;
        doc[0]["Options"][overlay::OPT_VNI]
            .as_str()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no VNI in host {}'s view of {network}: {inspect}", self.index))
    }

    /// Ends every process in this host's namespace and its sandboxes' (a
    /// crash of the whole host, as far as the cluster can tell: its agent
    /// stops renewing). Devices, pins and state stay.
    pub fn kill_processes(&self) {
        for entry in std::fs::read_dir(self.roots.netns_dir()).into_iter().flatten().flatten() {
            netpath::sandbox::kill_all_in(&entry.path());
        }
        netpath::sandbox::kill_all_in(&self.ns);
    }

    fn teardown(&self, errors: &mut Vec<String>) {
        let what = format!("host {}: netpath system reset", self.index);
        system_reset(&self.roots, || self.netpath(&["system", "reset"]), &what, errors);
        self.kill_processes();
        if let Err(e) = netns::remove(&self.ns) {
            errors.push(format!("{e:#}"));
        }
        remove_roots(&self.roots, &self.base, errors);
    }
}

pub struct MultiHost {
    pub id: String,
    pub underlay_ns: PathBuf,
    pub outside_ns: PathBuf,
    pub hosts: Vec<Host>,
    pub lab_bin: PathBuf,
    /// The lab's etcd, once `start_etcd` ran.
    pub etcd: Option<Etcd>,
    base: PathBuf,
    torn_down: bool,
}

impl MultiHost {
    /// Builds a lab of `n` hosts named after `tag`, unique per process and call.
    pub fn create(tag: &str, n: usize, bins: &Binaries) -> Result<MultiHost> {
        if n == 0 || n > 32 {
            bail!("a multi-host lab has 1 to 32 hosts, not {n}");
        }
        let id = unique_id("npmh", tag);
        let base = std::env::temp_dir().join(&id);
        let hosts = (0..n)
            .map(|i| {
                let hbase = base.join(format!("h{}", i + 1));
                Host {
                    index: i,
                    ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-h{}", i + 1)),
                    roots: Roots::under(
                        &hbase,
                        PathBuf::from("/sys/fs/bpf").join(format!("netpath-{id}-h{}", i + 1)),
                        Roots::default_cgroup().join(format!("{id}-h{}", i + 1)),
                    ),
                    ip: host_ip(i),
                    netpath_bin: bins.netpath.clone(),
                    base: hbase,
                }
            })
            .collect();
        let mut lab = MultiHost {
            underlay_ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-ul")),
            outside_ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-out")),
            hosts,
            lab_bin: bins.lab.clone(),
            etcd: None,
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
        netns::create_net(&self.underlay_ns)?;
        netns::create_net(&self.outside_ns)?;
        netns::run_in(&self.underlay_ns, || {
            let rtnl = Rtnl::new()?;
            rtnl.loopback_up()?;
            let br = rtnl.add_bridge(UNDERLAY_BRIDGE, 1500, [0x02, 0x00, 192, 168, 200, 254])?;
            rtnl.add_address(br, STORE_IP, UNDERLAY_PREFIX)?;
            rtnl.set_up(br)
        })?;
        self.attach(&self.outside_ns, "out", OUTSIDE_IF, OUTSIDE_IP, None)?;
        netns::run_in(&self.outside_ns, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling forwarding outside")
        })?;
        for h in &self.hosts {
            std::fs::create_dir_all(&h.base)?;
            std::fs::create_dir(&h.roots.cgroup)
                .with_context(|| format!("creating cgroup {}", h.roots.cgroup.display()))?;
            h.configure("{}")?;
            netns::create_net(&h.ns)?;
            self.attach(&h.ns, &format!("h{}", h.index + 1), HOST_UPLINK, h.ip, Some(OUTSIDE_IP))?;
        }
        Ok(())
    }

    /// A veth from the switch into `ns`: named `port` on the switch, `ifname`
    /// inside, holding `ip`, with a default route via `gateway`.
    fn attach(&self, ns: &Path, port: &str, ifname: &str, ip: Ipv4Addr, gateway: Option<Ipv4Addr>) -> Result<()> {
        let target = std::fs::File::open(ns)?;
        let peer = format!("{port}-in");
        netns::run_in(&self.underlay_ns, || {
            let rtnl = Rtnl::new()?;
            let br = rtnl.require_index(UNDERLAY_BRIDGE)?;
            let (near, far) = rtnl.add_veth(port, &peer, 1500)?;
            rtnl.set_master(near, br)?;
            rtnl.move_to_netns(far, &target)?;
            rtnl.set_up(near)
        })?;
        netns::run_in(ns, || {
            let rtnl = Rtnl::new()?;
            rtnl.loopback_up()?;
            let idx = rtnl.require_index(&peer)?;
            rtnl.rename(idx, ifname)?;
            rtnl.add_address(idx, ip, UNDERLAY_PREFIX)?;
            rtnl.set_up(idx)?;
            match gateway {
                Some(gw) => rtnl.add_default_route(gw),
                None => Ok(()),
            }
        })
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Waits until each host's agent has put the remote endpoint `key` in
    /// its data path, for every (host index, key) of `want`: polled every
    /// 100 ms, bounded by `limit` so a broken build fails instead of
    /// hanging. On timeout, names every key still missing and where.
    pub fn await_remote_endpoints(&self, want: &[(usize, RemoteEndpointKey)], limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut missing = Vec::new();
            for (i, key) in want {
                if self.host(*i).datapath().remote_endpoints()?.get(key, 0).is_err() {
                    missing.push(format!("host {i}: {}", shown(key)));
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= limit {
                bail!("after {limit:?} the agents still had not programmed {}", missing.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts etcd on the switch's address (`STORE_IP`), its data in this
    /// lab's temporary directory; returns the `cluster-store` URL.
    pub fn start_etcd(&mut self) -> Result<String> {
        if self.etcd.is_none() {
            self.etcd = Some(Etcd::start(&self.underlay_ns, STORE_IP, &self.base.join("etcd"))?);
        }
        Ok(self.store_url())
    }

    /// `etcd://192.168.200.254:2379`, as daemon.json's `cluster-store` says it.
    pub fn store_url(&self) -> String {
        format!("etcd://{STORE_IP}:{ETCD_CLIENT_PORT}")
    }

    /// Points every host at the lab's store: `cluster-store` and
    /// `cluster-advertise` (its underlay address), plus `extra` keys.
    pub fn configure_cluster(&self, extra: &serde_json::Value) -> Result<()> {
        for h in &self.hosts {
            let mut json = serde_json::json!({
                "cluster-store": self.store_url(),
                "cluster-advertise": h.ip.to_string(),
            });
            if let (Some(obj), Some(more)) = (json.as_object_mut(), extra.as_object()) {
                for (k, v) in more {
                    obj.insert(k.clone(), v.clone());
                }
            }
            h.configure(&json.to_string())?;
        }
        Ok(())
    }

    /// `netpath-lab PROBE ...` at `at`.
    pub fn probe(&self, at: Where, args: &[&str]) -> Result<Command> {
        let mut cmd = match at {
            Where::Sandbox(i, name) => self.hosts[i].sandbox_cmd(name, &self.lab_bin),
            Where::Host(i) => self.hosts[i].cmd(&self.lab_bin),
            Where::Outside => netns::Join::net(&self.outside_ns).command(&self.lab_bin),
        }?;
        cmd.args(args);
        Ok(cmd)
    }

    /// Removes everything: each host's netpath objects (through netpath),
    /// every process in the lab's namespaces, etcd, the namespaces, cgroups,
    /// pins and directories. Keeps going past failures and reports them all.
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        for h in &self.hosts {
            h.teardown(&mut errors);
        }
        if let Some(mut etcd) = self.etcd.take() {
            if let Err(e) = etcd.stop() {
                errors.push(format!("{e:#}"));
            }
        }
        for ns in [&self.outside_ns, &self.underlay_ns] {
            netpath::sandbox::kill_all_in(ns);
            if let Err(e) = netns::remove(ns) {
                errors.push(format!("{e:#}"));
            }
        }
        if self.base.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.base) {
                errors.push(format!("removing {}: {e}", self.base.display()));
            }
        }
        if errors.is_empty() { Ok(()) } else { bail!("multi-host lab teardown: {}", errors.join("; ")) }
    }
}

impl Drop for MultiHost {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Debian's etcd (3.4), one member, run inside a lab namespace and bound to
/// one lab address only; stopped by its PID.
pub struct Etcd {
    pub addr: Ipv4Addr,
    ns: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// How long etcd may take to answer after starting (about 3 s here).
    const READY_ATTEMPTS: u32 = 150;
    const READY_POLL: Duration = Duration::from_millis(100);

    /// Starts etcd in namespace `ns` listening on `addr` (client 2379, peer
    /// 2380), its data directory and log under `dir`, and waits until it answers.
    pub fn start(ns: &Path, addr: Ipv4Addr, dir: &Path) -> Result<Etcd> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut etcd = Etcd { addr, ns: ns.to_path_buf(), dir: dir.to_path_buf(), child: None };
        etcd.restart()?;
        Ok(etcd)
    }

    /// The gRPC endpoint (`http://ADDR:2379`).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{ETCD_CLIENT_PORT}", self.addr)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// Starts (again) on the same data directory: the store's content
    /// survives a `stop`.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("etcd at {} is already running", self.addr);
        }
        let client = self.endpoint();
        let peer = format!("http://{}:{ETCD_PEER_PORT}", self.addr);
        let log = std::fs::File::options().create(true).append(true).open(self.log())?;
        let child = netns::Join::net(&self.ns)
            .command("etcd")?
            .args(["--name", "n1", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}")])
            // No metrics or pprof listeners beyond the two above.
            .args(["--listen-metrics-urls", ""])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (Debian's etcd-server; `cargo xtask setup` installs it)")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..Self::READY_ATTEMPTS {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("etcd exited ({status}) before answering: {}", self.log_tail());
            }
            let ok = netns::Join::net(&self.ns)
                .command("etcdctl")?
                .args(["--endpoints", &self.endpoint(), "--dial-timeout", "1s", "endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Self::READY_POLL);
        }
        let _ = self.stop();
        bail!("etcd at {} did not answer: {}", self.addr, self.log_tail())
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log())
    }

    /// SIGTERM, then SIGKILL if it has not exited within five seconds.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill().context("killing etcd")?;
        child.wait().context("reaping etcd")?;
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: stopping etcd: {e:#}");
        }
    }
}

/// The last five lines of a log, on one line (for an error message).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
