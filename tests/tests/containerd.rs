//! containerd 1.6's `ctr run --cni` on netpath's CNI plugin. containerd
//! runs by hand in the lab host with its own root, state and socket; `ctr`
//! (which does the CNI calls itself) runs in a private mount namespace with
//! tmpfs over `/etc/cni/net.d` and `/opt`, holding only our conflist, the
//! plugin (as `netpath`) and the reference `loopback` plugin ctr also calls.
//! The container reaches a netpath peer and the outside; when its task is
//! killed, ctr's DEL (empty CNI_NETNS) takes netpath's side down.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netpath_lab::bench::systems::engine::Footprint;
use netpath_tests::{At, Lab, lab, output, probe, probe_in, sandboxes, tcp_pair, words};
use serde_json::{Value, json};

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const LOOPBACK: &str = "/usr/lib/cni/loopback";

/// Paths containerd 1.6 and ctr use whatever their roots are (shim
/// sockets, runc's state, ctr's FIFOs), files before directories.
const STRAY_PATHS: &[&str] = &["/run/containerd/runc", "/run/containerd/fifo", "/run/containerd/s", "/run/containerd"];

/// containerd of one lab, stopped and its footprint removed when dropped.
struct Containerd {
    dir: PathBuf,
    host_ns: PathBuf,
    namespace: String,
    daemon: Child,
    footprint: Footprint,
}

impl Containerd {
    fn start(lab: &Lab) -> Containerd {
        let dir = lab.roots.state.parent().unwrap().join("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        let footprint = Footprint::new(dir.clone(), format!("{}-ctr", lab.id), STRAY_PATHS);
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = netpath::netns::Join::net(&lab.host_ns)
            .command(CONTAINERD)
            .unwrap()
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, host_ns: lab.host_ns.clone(), namespace: lab.id.clone(), daemon, footprint };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.ctr(&["version"]).status().map(|s| !s.success()).unwrap_or(true) {
            assert!(Instant::now() < deadline, "containerd did not come up: {}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, in the lab host.
    fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = netpath::netns::Join::net(&self.host_ns).command(CTR).unwrap();
        cmd.arg("--address").arg(self.dir.join("containerd.sock")).args(["--namespace", &self.namespace]);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// `ctr run --cni` in the foreground (ctr sets the network up after
    /// the task starts and takes it down when the task ends), in a private
    /// mount namespace that shows it only `conflist` and `plugin`.
    fn run_cni(&self, conflist: &Value, plugin: &Path, rootfs: &Path, id: &str, argv: &[&str]) -> Child {
        let conf = self.dir.join("10-netpath.conflist");
        std::fs::write(&conf, conflist.to_string()).unwrap();
        let script = format!(
            "set -e; mount -t tmpfs np-cni /etc/cni/net.d; mount -t tmpfs np-opt /opt; mkdir -p /opt/cni/bin; \
             cp {conf} /etc/cni/net.d/; cp {plugin} /opt/cni/bin/netpath; cp {LOOPBACK} /opt/cni/bin/loopback; \
             exec nsenter --net={host} {CTR} --address {sock} --namespace {ns} run --cni --rm \
             --cgroup /{cg}/{id} --rootfs {rootfs} {id} {argv}",
            conf = conf.display(),
            plugin = plugin.display(),
            host = self.host_ns.display(),
            sock = self.dir.join("containerd.sock").display(),
            ns = self.namespace,
            cg = self.footprint.cgroup_parent,
            rootfs = rootfs.display(),
            argv = argv.join(" "),
        );
        let log = std::fs::File::create(self.dir.join(format!("ctr-{id}.log"))).unwrap();
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// The PID of task `id` once it runs (bounded wait).
    fn task_pid(&self, id: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, out, _) = output(&mut self.ctr(&["task", "ls"])).unwrap();
            let pid = out
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.first() == Some(&id) && w.get(2) == Some(&"RUNNING"))
                .and_then(|w| w[1].parse().ok());
            if let Some(pid) = pid {
                return pid;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join(format!("ctr-{id}.log"))).unwrap_or_default();
                panic!("task {id} did not start: {out}\nctr: {log}\ncontainerd: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", "c1"]).status();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // runc's state directory for this containerd namespace.
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
        self.footprint.release();
    }
}

/// A busybox-static root filesystem in `dir`.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let ok = Command::new("chroot").arg(&rootfs).args(["/bin/busybox", "--install", "-s"]).status().unwrap();
    assert!(ok.success());
    rootfs
}

#[test]
fn ctr_run_cni_container_on_netpath() {
    for p in [CONTAINERD, CTR, LOOPBACK, "/usr/sbin/runc", "/bin/busybox"] {
        assert!(Path::new(p).exists(), "{p} missing (cargo xtask setup installs the bench peers)");
    }
    let lab = lab("ctr");
    let plugin = lab.netpath_bin.with_file_name("netpath-cni");
    // The network and a peer exist before containerd's container.
    lab.netpath_ok(&["network", "create", "ctrnet", "--subnet", "10.67.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "peer", "--network", "ctrnet", "--ip", "10.67.0.200"]).unwrap();
    let ctrd = Containerd::start(&lab);
    let rootfs = busybox_rootfs(&ctrd.dir);
    let r = &lab.roots;
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "ctrnet",
        "plugins": [{
            "type": "netpath",
            "netpath": {"stateDir": r.state, "runDir": r.run, "bpfDir": r.bpf, "config": r.config, "cgroup": r.cgroup},
        }],
    });
    let mut ctr = ctrd.run_cni(&conflist, &plugin, &rootfs, "c1", &["/bin/sleep", "600"]);
    let pid = ctrd.task_pid("c1");
    // ctr's setup runs after the task starts: wait (bounded) for the record.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let all = sandboxes(&lab).unwrap();
        if let Some(rec) = all.into_iter().find(|s| s["mode"]["external"]["owner"] == "cni") {
            break rec;
        }
        assert!(Instant::now() < deadline, "ctr never added the container: {:?}", ctr.try_wait());
        std::thread::sleep(Duration::from_millis(100));
    };
    let ip = rec["attachments"][0]["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.67.0."), "{rec}");
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));

    // The peer reaches the container, and the container the outside.
    let (r, _) = tcp_pair(probe_in(&lab, &netns, "tcp-sink --port 7500 --timeout 10"), {
        let mut c = probe(&lab, At::Sandbox("peer"), &[]);
        c.args(words(&format!("tcp-send --to {ip}:7500 --bytes 4096 --timeout 5")));
        c
    });
    assert!(r["peer"].as_str().unwrap().starts_with("10.67.0.200:"), "{r}");
    let (r, _) = tcp_pair(
        probe(&lab, At::Outside, &words("tcp-sink --port 7501 --timeout 10")),
        probe_in(&lab, &netns, "tcp-send --to 198.18.0.1:7501 --bytes 4096 --timeout 5"),
    );
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.2:"), "masqueraded: {r}");

    // The task ends: ctr's DEL (empty CNI_NETNS) leaves nothing of netpath's.
    let host_ifname = rec["attachments"][0]["host_ifname"].as_str().unwrap().to_string();
    assert!(output(&mut ctrd.ctr(&["task", "kill", "-s", "SIGKILL", "c1"])).unwrap().0 == 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctr.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ctr did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(ctrd.dir.join("ctr-c1.log")).unwrap_or_default();
    let names: Vec<Value> = sandboxes(&lab).unwrap().iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("peer")], "ctr's DEL removed the record; ctr said: {log}");
    assert!(!lab.in_host(|r| r.link_names()).unwrap().contains(&host_ifname), "host veth gone");
    let ipv4: std::net::Ipv4Addr = ip.parse().unwrap();
    let key = netpath_common::EndpointKey { ipv4: ipv4.octets() };
    assert!(lab.datapath().endpoints().unwrap().get(&key, 0).is_err(), "endpoint entry gone");
}
