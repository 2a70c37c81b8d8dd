//! Docker Engine with netpath as its network driver: the same hermetic
//! dockerd as `docker.rs` (in a private mount namespace whose
//! `/run/docker/plugins` holds the plugin's socket), `netpath
//! docker-plugin` serving the lab's netpath instance, and the bench's two
//! containers on a `docker network create -d netpath` network. Containers,
//! ports and their removal all go through `docker`; the data path is
//! netpath's, so the evidence is netpath's counters.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    docker::Dockerd,
    engine::{self, Engine},
    netpath::TcCounters,
};
use crate::{
    bench::{
        catalog::{Scenario, System},
        testbed::{Place, Procs, Testbed, routes_for, start_servers},
    },
    fixture::{Binaries, Lab},
};

/// The Docker network's subnet: the bench's own is docker0's here.
pub const SUBNET: &str = "10.203.0.0/24";
/// The network's name in Docker.
const NETWORK: &str = "bench";

/// `netpath docker-plugin` for a lab's instance, on `netpath.sock` in
/// `dir` (what dockerd's plugin directory holds), its output appended to
/// `plugin.log` there; ended by PID when dropped (after dockerd, which
/// needs it to remove its containers) or killed. Started again on the same
/// directory, it replaces the stale socket. The bench and the Docker plugin
/// tests both start it here.
pub struct Plugin {
    child: Child,
    pub socket: PathBuf,
}

impl Plugin {
    pub fn start(lab: &Lab, dir: &Path) -> Result<Plugin> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("netpath.sock");
        let log_path = dir.join("plugin.log");
        let log = std::fs::File::options().create(true).append(true).open(&log_path)?;
        let mut cmd = lab.netpath(&["docker-plugin".as_ref(), "--socket".as_ref(), socket.as_os_str()])?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().context("starting netpath docker-plugin")?;
        let mut plugin = Plugin { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&plugin.socket).is_err() {
            if Instant::now() > deadline || plugin.child.try_wait()?.is_some() {
                plugin.kill();
                bail!("netpath docker-plugin did not come up; see {}", log_path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(plugin)
    }

    /// SIGKILL, as a crash would end it; the socket file stays behind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bench's containers on the netpath network (Docker's `inspect`
/// shows their address per network, not at the top).
struct OnNetwork<'a>(&'a Dockerd);

impl Engine for OnNetwork<'_> {
    fn program(&self) -> &'static str {
        "docker"
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        self.0.docker(args)
    }

    fn root(&self) -> &Path {
        &self.0.dir
    }

    fn run_options(&self) -> Vec<String> {
        vec!["--network".into(), NETWORK.into()]
    }

    fn ip_of(&self, name: &str) -> Result<Ipv4Addr> {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}");
        let ip = self.0.docker(&["inspect", "-f", &f, name])?;
        ip.trim().parse().with_context(|| format!("address of {name}: {ip:?}"))
    }
}

/// Docker with the netpath driver: `srv` (the published ports) and `cli`
/// on a netpath network, servers in `srv` and outside.
pub fn testbed(bins: &Binaries, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let system = System::DockerNetpath;
    let lab = Lab::create("bench-dkpl", bins)?;
    let plugins = lab.roots.state.parent().context("lab base")?.join("plugins");
    let plugin = Plugin::start(&lab, &plugins)?;
    let dockerd = Dockerd::start_with(&lab, false, Some(&plugins))?;
    dockerd.docker(&["network", "create", "-d", "netpath", "--subnet", SUBNET, NETWORK])?;
    let (server, client, srv_ip) = engine::server_and_client(&OnNetwork(&dockerd))?;
    let outside = Place::ns(&lab.outside_ns);
    // Host processes reach published ports through netpath's socket
    // programs, which act for sockets in the instance's cgroup.
    let host_local = Place { ns: lab.host_ns.clone(), cgroup: Some(lab.roots.cgroup.clone()) };
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    let routes = routes_for(system, &client, (&server, srv_ip), &outside, &host_local, scenarios);
    let datapath = lab.datapath();
    let mut tb = Testbed::new(system, lab, routes, procs).with_evidence(system, TcCounters(datapath));
    // Dropped in this order: dockerd removes its containers through the plugin.
    tb.guards.push(Box::new(dockerd));
    tb.guards.push(Box::new(plugin));
    Ok(tb)
}

/// The testbed's Docker as an engine whose containers go on the netpath
/// network (for the engine scaling runs).
pub fn engine(d: &Dockerd) -> impl Engine + '_ {
    OnNetwork(d)
}
