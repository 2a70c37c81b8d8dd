//! The hermetic lab: a "host" namespace where netpath runs, an "outside"
//! namespace behind an uplink veth (the host's default route points there),
//! and helpers to run netpath and clients inside. Tests, the bench and the
//! demo all build their world with this; nothing touches the machine's own
//! interfaces, routes or firewall.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use sha2::{Digest, Sha256};

use crate::{datapath::Datapath, link::Rtnl, netns, paths::Roots, signals, stats};

/// Where the lab's namespaces are pinned, so `ip netns` sees them too.
const NETNS_RUN_DIR: &str = "/run/netns";
pub const HOST_UPLINK: &str = "uplink0";
pub const OUTSIDE_UPLINK: &str = "eth0";
pub const HOST_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const UPLINK_PREFIX: u8 = 24;
pub const FAR_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const FAR_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

pub struct Lab {
    pub id: String,
    pub host_ns: PathBuf,
    pub outside_ns: PathBuf,
    pub roots: Roots,
    pub netpath_bin: PathBuf,
    base: PathBuf,
    torn_down: bool,
}

impl Lab {
    /// Builds a new lab named after `tag`, unique per process and call.
    pub fn create(tag: &str, netpath_bin: impl Into<PathBuf>) -> Result<Lab> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut rnd = [0u8; 2];
        getrandom::fill(&mut rnd).expect("kernel randomness");
        let id = format!(
            "nplab-{tag}-{}-{}{:02x}{:02x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst),
            rnd[0],
            rnd[1]
        );
        let base = std::env::temp_dir().join(&id);
        let roots = Roots::under(
            &base,
            PathBuf::from("/sys/fs/bpf").join(format!("netpath-{id}")),
            Roots::default_cgroup().join(&id),
        );
        let mut lab = Lab {
            host_ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-host")),
            outside_ns: Path::new(NETNS_RUN_DIR).join(format!("{id}-out")),
            netpath_bin: netpath_bin.into(),
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
        let mut config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
        config.entry("dns").or_insert_with(|| serde_json::json!([OUTSIDE_IP.to_string()]));
        let xdp = config.get("uplink-xdp").and_then(|v| v.as_str()).is_some_and(|m| m != "off");
        // The outside stands for a real wire, whose frames carry complete
        // checksums; a veth's partial ones do not survive XDP redirection.
        if xdp {
            netns::run_in(&self.outside_ns, || crate::ethtool::set_tx_checksum(OUTSIDE_UPLINK, false))?;
        }
        std::fs::write(&self.roots.config, serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    /// A `netpath` command that runs in the lab host with the lab's roots.
    pub fn netpath<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Command> {
        let mut cmd = self.host_cmd(&self.netpath_bin)?;
        cmd.args(args);
        for (k, v) in self.roots.env() {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// Runs netpath, failing with its stderr unless it succeeds; returns stdout.
    pub fn netpath_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = self.netpath(args)?.output().context("running netpath")?;
        check(&out, &format!("netpath {}", show_args(args)))
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
        if self.roots.state.exists() {
            match self.netpath(&["system", "reset"]).and_then(|mut c| Ok(c.output()?)) {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    errors.push(format!("netpath system reset: {}", String::from_utf8_lossy(&out.stderr).trim()))
                }
                Err(e) => errors.push(format!("netpath system reset: {e:#}")),
            }
        }
        let (far, seg) = (self.far_ns(), self.segment_ns());
        for ns in [&self.host_ns, &self.outside_ns, &far, &seg] {
            crate::sandbox::kill_all_in(ns);
            if let Err(e) = netns::remove(ns) {
                errors.push(format!("{e:#}"));
            }
        }
        if self.roots.cgroup.exists() {
            if let Err(e) = std::fs::remove_dir(&self.roots.cgroup) {
                errors.push(format!("removing {}: {e}", self.roots.cgroup.display()));
            }
        }
        for dir in [&self.roots.bpf, &self.base] {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    errors.push(format!("removing {}: {e}", dir.display()));
                }
            }
        }
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

fn show_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Stdout of a finished command, or an error carrying its stderr.
pub fn check(out: &Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Traffic endpoints run inside sandboxes and namespaces by tests, the bench
/// and the demo: they report what the receiver actually saw.
#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build a lab, run two sandboxes with traffic between them and show the
    /// data path counters live until Ctrl-C or the duration ends.
    Demo {
        #[arg(long, default_value_t = 600)]
        duration: u64,
    },
    /// Accept one TCP connection, read to EOF, print what arrived as JSON.
    TcpSink {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Send BYTES of deterministic payload over TCP, print what was sent as JSON.
    TcpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        bytes: usize,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Receive COUNT UDP datagrams, print what arrived as JSON.
    UdpSink {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Accept connections and read each to EOF until MAX were served or
    /// TIMEOUT passed; print how many and from where.
    TcpServe {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        max: usize,
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Open COUNT short connections one after another (connect, send a byte,
    /// close); print how many succeeded.
    TcpChurn {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: usize,
    },
    /// Answer up to COUNT UDP datagrams with the same bytes.
    UdpEcho {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Send one UDP datagram from an unconnected socket and print where the
    /// answer appeared to come from.
    UdpAsk {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        /// Connect the socket first, so that ICMP errors come back as errors.
        #[arg(long)]
        connected: bool,
    },
    /// Hand COUNT identical UDP frames to TO to the neighbour on DEV as a NIC
    /// would (XDP live frames, no sender stack); print frames and seconds.
    WireSend {
        #[arg(long)]
        to: std::net::SocketAddrV4,
        #[arg(long, default_value = "eth0")]
        dev: String,
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// UDP payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long)]
        count: u32,
    },
    /// Send hand-made broken IPv4 frames out of IFACE (raw socket); print how many.
    SendMalformed {
        #[arg(long, default_value = "eth0")]
        iface: String,
        /// Source address written into the frames (the sandbox's own, so the
        /// data path takes them as the sandbox's).
        #[arg(long)]
        src: Ipv4Addr,
    },
    /// A tiny upstream DNS server for tests: answers A queries for NAME with
    /// ADDR, NXDOMAIN otherwise, until TIMEOUT.
    DnsStub {
        #[arg(long, default_value_t = 53)]
        port: u16,
        #[arg(long)]
        name: String,
        #[arg(long)]
        addr: Ipv4Addr,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Ask the first nameserver of /etc/resolv.conf (or SERVER) for NAME's A
    /// records; print the answer as JSON.
    Dig {
        #[arg(long)]
        name: String,
        #[arg(long)]
        server: Option<Ipv4Addr>,
        /// Ask over TCP instead of UDP.
        #[arg(long)]
        tcp: bool,
    },
    /// Echo server for the bench's latency and connection-rate probes.
    RrServe {
        #[arg(long)]
        port: u16,
        #[arg(long, value_enum, default_value = "tcp")]
        proto: crate::bench::probes::Proto,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Back-to-back request/response of SIZE bytes for DURATION_MS (or MAX
    /// rounds); prints latency percentiles as JSON.
    RrClient {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_enum, default_value = "tcp")]
        proto: crate::bench::probes::Proto,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 10_000_000)]
        max: usize,
    },
    /// New TCP connections from PARALLEL clients, each one after another,
    /// for DURATION_MS (or MAX in all); prints the rate and connect latency
    /// as JSON.
    ConnRate {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 1_000_000)]
        max: usize,
        #[arg(long, default_value_t = 1)]
        parallel: usize,
    },
    /// The benchmark rig: netpath against iptables, docker-proxy, Docker
    /// and the no-NAT bounds (what `cargo xtask bench` runs).
    Bench(crate::bench::BenchArgs),
    /// Send COUNT UDP datagrams of SIZE bytes.
    UdpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
}

pub fn run_command(cmd: LabCommand) -> Result<i32> {
    match cmd {
        LabCommand::Demo { duration } => demo(Duration::from_secs(duration)),
        LabCommand::TcpSink { port, timeout } => tcp_sink(port, Duration::from_secs(timeout)),
        LabCommand::TcpSend { to, bytes, timeout } => tcp_send(to, bytes, Duration::from_secs(timeout)),
        LabCommand::UdpSink { port, count, timeout } => udp_sink(port, count, Duration::from_secs(timeout)),
        LabCommand::UdpSend { to, count, size } => udp_send(to, count, size),
        LabCommand::TcpServe { port, max, timeout } => tcp_serve(port, max, Duration::from_secs(timeout)),
        LabCommand::TcpChurn { to, count } => tcp_churn(to, count),
        LabCommand::UdpEcho { port, count, timeout } => udp_echo(port, count, Duration::from_secs(timeout)),
        LabCommand::UdpAsk { to, timeout, connected } => udp_ask(to, Duration::from_secs(timeout), connected),
        LabCommand::SendMalformed { iface, src } => send_malformed(&iface, src),
        LabCommand::WireSend { to, dev, sport, size, count } => {
            let sent = crate::lab_wire::send_udp(&dev, to, sport, size, count)?;
            println!("{}", serde_json::to_string(&sent)?);
            Ok(0)
        }
        LabCommand::DnsStub { port, name, addr, timeout } => dns_stub(port, &name, addr, Duration::from_secs(timeout)),
        LabCommand::Dig { name, server, tcp } => dig(&name, server, tcp),
        LabCommand::RrServe { port, proto, timeout } => {
            crate::bench::probes::rr_serve(port, proto, Duration::from_secs(timeout))
        }
        LabCommand::RrClient { to, proto, size, duration_ms, max } => {
            let r = crate::bench::probes::rr_client(to, proto, size, Duration::from_millis(duration_ms), max)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(0)
        }
        LabCommand::ConnRate { to, duration_ms, max, parallel } => {
            let r = crate::bench::probes::conn_rate(to, Duration::from_millis(duration_ms), max, parallel)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(0)
        }
        LabCommand::Bench(args) => crate::bench::run(args),
    }
}

/// Deterministic, incompressible-looking payload (xorshift).
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints the "listening" line `start_sink` waits for.
pub fn announce(addr: SocketAddr) {
    ready(addr)
}

fn ready(addr: SocketAddr) {
    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
    let _ = std::io::stdout().flush();
}

fn tcp_sink(port: u16, timeout: Duration) -> Result<i32> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    ready(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e).context("no connection arrived"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let local = stream.local_addr()?;
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    println!(
        "{}",
        serde_json::json!({"peer": peer.to_string(), "local": local.to_string(), "bytes": total, "sha256": hex(&hasher.finalize())})
    );
    Ok(0)
}

fn tcp_send(to: SocketAddr, bytes: usize, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e).with_context(|| format!("connecting to {to}")),
        }
    };
    stream.set_write_timeout(Some(timeout))?;
    let data = payload(bytes);
    stream.write_all(&data)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let local = stream.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"local": local.to_string(), "bytes": bytes, "sha256": hex(&Sha256::digest(&data))})
    );
    Ok(0)
}

fn tcp_serve(port: u16, max: usize, timeout: Duration) -> Result<i32> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    ready(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut served = 0usize;
    let mut peers = std::collections::BTreeSet::new();
    while served < max && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
                peers.insert(peer.ip().to_string());
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::json!({"served": served, "peers": peers}));
    Ok(0)
}

fn tcp_churn(to: SocketAddr, count: usize) -> Result<i32> {
    let (mut ok, mut failed) = (0usize, 0usize);
    for _ in 0..count {
        let once = || -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"x")?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?;
            Ok(())
        };
        match once() {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!("{}", serde_json::json!({"ok": ok, "failed": failed}));
    Ok(0)
}

fn udp_echo(port: u16, count: usize, timeout: Duration) -> Result<i32> {
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    ready(sock.local_addr()?);
    sock.set_read_timeout(Some(timeout))?;
    let mut peers = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..count {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { break };
        sock.send_to(&buf[..n], peer)?;
        peers.push(peer.to_string());
    }
    println!("{}", serde_json::json!({"peers": peers}));
    Ok(0)
}

fn udp_ask(to: SocketAddr, timeout: Duration, connected: bool) -> Result<i32> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.set_read_timeout(Some(timeout))?;
    let question = payload(64);
    if connected {
        sock.connect(to)?;
        sock.send(&question)?;
    } else {
        sock.send_to(&question, to)?;
    }
    let mut buf = [0u8; 256];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => {
            println!("{}", serde_json::json!({"from": from.to_string(), "echoed": buf[..n] == question[..]}));
            Ok(0)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"error": e.kind().to_string(), "refused": e.kind() == std::io::ErrorKind::ConnectionRefused})
            );
            Ok(1)
        }
    }
}

/// Frames a data path must survive: an IPv4 header length below the
/// minimum, a header cut short, and transport headers cut short.
pub fn malformed_frames(src: Ipv4Addr) -> Vec<Vec<u8>> {
    let eth = |payload: &[u8]| -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    };
    let ip = |ihl_byte: u8, proto: u8, l4: &[u8]| -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut h = vec![ihl_byte, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&OUTSIDE_IP.octets());
        h.extend_from_slice(l4);
        h
    };
    vec![
        eth(&ip(0x43, 6, &[0; 20])),
        eth(&[0x45, 0, 0, 20, 0, 0]),
        eth(&ip(0x45, 6, &[0x12, 0x34, 0x00, 0x50])),
        eth(&ip(0x45, 17, &[0x12])),
        eth(&ip(0x4f, 17, &[0; 8])),
    ]
}

fn send_malformed(iface: &str, src: Ipv4Addr) -> Result<i32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: plain libc calls on a socket we own; the address struct is
    // zeroed and filled before use.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            bail!("no interface {iface}");
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("raw socket");
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let mut sent = 0;
        for frame in malformed_frames(src) {
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if n == frame.len() as isize {
                sent += 1;
            }
        }
        libc::close(fd);
        println!("{}", serde_json::json!({ "sent": sent }));
    }
    Ok(0)
}

fn dns_stub(port: u16, name: &str, addr: Ipv4Addr, timeout: Duration) -> Result<i32> {
    use hickory_proto::{
        op::{Message, MessageType, ResponseCode},
        rr::{RData, Record, rdata::A},
    };
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    ready(sock.local_addr()?);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    let mut served = 0;
    while Instant::now() < deadline && !signals::interrupted() {
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
        let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
        let mut r = Message::new();
        r.set_id(q.id()).set_message_type(MessageType::Response).set_recursion_available(true);
        for query in q.queries() {
            r.add_query(query.clone());
            if query.name().to_ascii().trim_end_matches('.').eq_ignore_ascii_case(name) {
                r.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A(addr))));
            } else {
                r.set_response_code(ResponseCode::NXDomain);
            }
        }
        sock.send_to(&r.to_vec()?, peer)?;
        served += 1;
    }
    println!("{}", serde_json::json!({ "served": served }));
    Ok(0)
}

fn dig(name: &str, server: Option<Ipv4Addr>, tcp: bool) -> Result<i32> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, RecordType},
    };
    let server = match server {
        Some(s) => s,
        None => std::fs::read_to_string("/etc/resolv.conf")?
            .lines()
            .find_map(|l| l.strip_prefix("nameserver").and_then(|a| a.trim().parse().ok()))
            .context("no nameserver in /etc/resolv.conf")?,
    };
    let mut q = Message::new();
    q.set_id(0x4e50).set_recursion_desired(true).add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let query = q.to_vec()?;
    let reply = if tcp {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::from((server, 53)), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).context("no answer")?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply)?;
        reply
    } else {
        let sock = UdpSocket::bind(("0.0.0.0", 0))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.send_to(&query, (server, 53))?;
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).context("no answer")?;
        buf[..n].to_vec()
    };
    let r = Message::from_vec(&reply)?;
    let answers: Vec<String> = r
        .answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"server": server.to_string(), "rcode": r.response_code().to_string(), "answers": answers})
    );
    Ok(0)
}

fn udp_sink(port: u16, count: usize, timeout: Duration) -> Result<i32> {
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    // Room for a burst at wire speed (wire-send): counting each datagram
    // here is slower than the data path delivers them.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))?;
    ready(sock.local_addr()?);
    let deadline = Instant::now() + timeout;
    let mut peers = std::collections::BTreeSet::new();
    let mut received = 0usize;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 65536];
    while received < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                peers.insert(peer.to_string());
                hasher.update(&buf[..n]);
                received += 1;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::json!({"peers": peers, "datagrams": received, "sha256": hex(&hasher.finalize())}));
    Ok(0)
}

fn udp_send(to: SocketAddr, count: usize, size: usize) -> Result<i32> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.connect(to)?;
    let data = payload(size);
    for _ in 0..count {
        sock.send(&data)?;
        // Paced so that a bounded burst never overruns the receiver's buffer.
        std::thread::sleep(Duration::from_micros(200));
    }
    println!("{}", serde_json::json!({"local": sock.local_addr()?.to_string(), "datagrams": count}));
    Ok(0)
}

/// Starts a sink in the background and waits for its "listening" line.
pub fn start_sink(mut cmd: Command) -> Result<(std::process::Child, BufReader<std::process::ChildStdout>)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("starting sink")?;
    let mut out = BufReader::new(child.stdout.take().context("sink stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("listening") {
        let _ = child.kill();
        bail!("sink did not start: {line:?}");
    }
    Ok((child, out))
}

fn demo(duration: Duration) -> Result<i32> {
    signals::install();
    let exe = std::env::current_exe()?;
    eprintln!("building the lab...");
    let lab = Lab::create("demo", &exe)?;
    lab.netpath_ok(&["network", "create", "demo", "--subnet", "10.77.0.0/24"])?;
    lab.netpath_ok(&["run", "-d", "--name", "client", "--network", "demo"])?;
    let have_iperf = Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success());
    let server: &[&str] = if have_iperf { &["iperf3", "-s"] } else { &["sleep", "infinity"] };
    let mut args = vec!["run", "-d", "--name", "server", "--network", "demo", "--"];
    args.extend_from_slice(server);
    lab.netpath_ok(&args)?;
    let server_ip = "10.77.0.3";
    let pings = (duration.as_secs() * 5).to_string();
    let mut ping = lab
        .sandbox_cmd("client", "ping")?
        .args(["-q", "-i", "0.2", "-c", &pings, server_ip])
        .stdout(Stdio::null())
        .spawn()
        .context("starting ping")?;
    // And out through the masquerade to the outside namespace.
    let outside = OUTSIDE_IP.to_string();
    let mut ping_out = lab
        .sandbox_cmd("client", "ping")?
        .args(["-q", "-i", "0.5", "-c", &pings, &outside])
        .stdout(Stdio::null())
        .spawn()
        .context("starting ping")?;
    let datapath = lab.datapath();
    let started = Instant::now();
    let mut previous: Option<(Vec<_>, Instant)> = None;
    let mut burst: Option<std::process::Child> = None;
    while !signals::interrupted() && started.elapsed() < duration {
        if have_iperf && burst.as_mut().is_none_or(|b| b.try_wait().ok().flatten().is_some()) {
            burst = Some(
                lab.sandbox_cmd("client", "iperf3")?
                    .args(["-c", server_ip, "-t", "2", "-b", "500M"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        let now = stats::read(&datapath)?;
        let before = previous.as_ref().map(|(b, t): &(Vec<_>, Instant)| (b.as_slice(), t.elapsed()));
        print!("\x1b[2J\x1b[H");
        println!("netpath demo, lab {} — sandboxes client (10.77.0.2) and server ({server_ip})", lab.id);
        println!(
            "traffic: client pings server every 200 ms{} and the outside ({outside}, masqueraded) every 500 ms; Ctrl-C tears down\n",
            if have_iperf { ", iperf3 bursts" } else { "" }
        );
        print!("{}", stats::render(&now, before));
        let _ = std::io::stdout().flush();
        previous = Some((now, Instant::now()));
        signals::sleep_unless_interrupted(Duration::from_secs(1));
    }
    for child in [Some(&mut ping), Some(&mut ping_out), burst.as_mut()].into_iter().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
    eprintln!("tearing the lab down...");
    drop(lab);
    Ok(0)
}
