//! Parity with the real thing: the same scenarios on Docker Engine 20.10
//! (dockerd hermetic in one lab) and on netpath (in another lab with the same
//! bridge address), compared field by field: `port` output, /etc/hosts,
//! /etc/resolv.conf, `--link` variables, `network inspect` essentials, and
//! who reaches and resolves whom.
//!
//! Known, deliberate differences (also in the README): netpath has no IPv6,
//! so Docker's `:::PORT` lines of `docker port` are left out of the
//! comparison; names on user-defined networks come from a resolver on the
//! gateway (aardvark-dns style) rather than 127.0.0.11, so resolv.conf is
//! compared only on the default network.
use std::collections::BTreeMap;

use netpath_lab::bench::{
    systems::{docker::Dockerd, engine::Engine as _},
    topology::GATEWAY,
};
use netpath_tests::{Lab, lab, output, words};
use serde_json::Value;

/// One system: run the scenario's commands on Docker or on netpath.
trait Engine {
    /// The engine's own command line (`docker ...` / `netpath ...`); stdout.
    fn cli(&self, argv: &[&str]) -> String;
    fn run_detached(&self, name: &str, args: &str);
    /// Runs `cmd` in a new sandbox/container that stays around; returns stdout.
    fn run_cmd(&self, name: &str, args: &str, cmd: &str) -> String;
    fn exec(&self, name: &str, cmd: &str) -> (i32, String);
    fn port(&self, name: &str) -> Vec<String>;
    fn network_create(&self, args: &str) {
        let mut argv = vec!["network", "create"];
        argv.extend(words(args));
        self.cli(&argv);
    }
    fn inspect(&self, network: &str) -> Value {
        serde_json::from_str(&self.cli(&["network", "inspect", network])).unwrap()
    }
    /// Whether `name` resolves inside `from`.
    fn resolves(&self, from: &str, name: &str) -> bool;
}

struct Docker<'a>(&'a Dockerd);
struct Netpath<'a>(&'a Lab);

impl Engine for Docker<'_> {
    fn cli(&self, argv: &[&str]) -> String {
        self.0.docker(argv).unwrap()
    }
    fn run_detached(&self, name: &str, args: &str) {
        let mut argv = vec!["run", "-d", "--name", name];
        argv.extend(words(args));
        argv.extend(["bb", "sleep", "600"]);
        self.cli(&argv);
    }
    fn run_cmd(&self, name: &str, args: &str, cmd: &str) -> String {
        // Kept running, as a netpath sandbox stays up: an exited container
        // would hand its address back and shift every later one.
        self.run_detached(name, args);
        self.exec(name, cmd).1
    }
    fn exec(&self, name: &str, cmd: &str) -> (i32, String) {
        let mut c = self.0.cmd();
        c.args(["exec", name]).args(words(cmd));
        let (code, out, _) = output(&mut c).unwrap();
        (code, out)
    }
    fn port(&self, name: &str) -> Vec<String> {
        let out = self.cli(&["port", name]);
        // netpath has no IPv6: leave Docker's `:::PORT` lines out.
        let mut lines: Vec<String> = out.lines().filter(|l| !l.contains(":::")).map(String::from).collect();
        lines.sort();
        lines
    }
    fn resolves(&self, from: &str, name: &str) -> bool {
        self.exec(from, &format!("nslookup {name}")).0 == 0
    }
}

impl Engine for Netpath<'_> {
    fn cli(&self, argv: &[&str]) -> String {
        self.0.netpath_ok(argv).unwrap()
    }
    fn run_detached(&self, name: &str, args: &str) {
        let mut argv = vec!["run", "-d", "--name", name];
        argv.extend(words(args));
        self.cli(&argv);
    }
    fn run_cmd(&self, name: &str, args: &str, cmd: &str) -> String {
        self.run_detached(name, args);
        self.exec(name, cmd).1
    }
    fn exec(&self, name: &str, cmd: &str) -> (i32, String) {
        let mut argv = vec!["exec", name, "--"];
        argv.extend(words(cmd));
        let (code, out, _) = output(&mut self.0.netpath(&argv).unwrap()).unwrap();
        (code, out)
    }
    fn port(&self, name: &str) -> Vec<String> {
        let mut lines: Vec<String> = self.cli(&["port", name]).lines().map(String::from).collect();
        lines.sort();
        lines
    }
    fn resolves(&self, from: &str, name: &str) -> bool {
        self.exec(from, &format!("getent hosts {name}")).0 == 0
    }
}

/// Everything one engine shows for the scenario, keyed by what it is.
fn observe(e: &dyn Engine) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    e.run_detached("web", "-p 8080:80 -p 127.0.0.1::81 -p 9000-9002:9000-9002/udp");
    seen.insert("port web".into(), e.port("web").join("\n"));

    e.run_detached("redis", "--expose 6379");
    let env = e.run_cmd("cli", "--link redis:db", "env");
    let mut db: Vec<&str> = env.lines().filter(|l| l.starts_with("DB_")).collect();
    db.sort();
    seen.insert("link env".into(), db.join("\n"));

    let flags = "-h docker.test.com --dns 1.1.1.1 --dns-search example.com --add-host qq.com:2.2.2.2";
    seen.insert("/etc/hosts".into(), e.run_cmd("hc", flags, "cat /etc/hosts"));
    seen.insert("/etc/resolv.conf".into(), e.exec("hc", "cat /etc/resolv.conf").1);
    seen.insert("hostname".into(), e.exec("hc", "hostname").1);

    e.network_create("--subnet 10.90.0.0/24 n1");
    e.run_detached("mm", "--network n1");
    let net = &e.inspect("n1")[0];
    let mut essentials = vec![
        format!("Name={}", net["Name"]),
        format!("Driver={}", net["Driver"]),
        format!("Scope={}", net["Scope"]),
        format!("Internal={}", net["Internal"]),
        format!("Subnet={}", net["IPAM"]["Config"][0]["Subnet"]),
        format!("Gateway={}", net["IPAM"]["Config"][0]["Gateway"]),
    ];
    for c in net["Containers"].as_object().unwrap().values() {
        essentials.push(format!("member {} {} {}", c["Name"], c["IPv4Address"], c["MacAddress"]));
    }
    seen.insert("network inspect n1".into(), essentials.join("\n"));

    e.network_create("--subnet 10.91.0.0/24 na");
    e.network_create("--subnet 10.92.0.0/24 nb");
    e.run_detached("a1", "--network na --network-alias alpha");
    e.run_detached("a2", "--network na");
    e.run_detached("b1", "--network nb");
    let mut matrix = Vec::new();
    for (from, to) in [
        ("a1", "10.91.0.3"),
        ("a2", "10.91.0.2"),
        ("a1", "10.92.0.2"),
        ("b1", "10.91.0.2"),
        ("a1", "198.18.0.1"),
        ("b1", "198.18.0.1"),
    ] {
        let ok = e.exec(from, &format!("ping -c 1 -W 1 {to}")).0 == 0;
        matrix.push(format!("{from} reaches {to}: {ok}"));
    }
    for (from, name) in [("a1", "a2"), ("a2", "alpha"), ("a2", "a1"), ("a1", "b1"), ("b1", "alpha")] {
        matrix.push(format!("{from} resolves {name}: {}", e.resolves(from, name)));
    }
    seen.insert("reachability".into(), matrix.join("\n"));
    seen
}

#[test]
fn docker_and_netpath_agree() {
    let docker_lab = lab("parity-docker");
    let dockerd = Dockerd::start(&docker_lab, false).expect("dockerd in the lab");
    dockerd.import_busybox().unwrap();
    let docker = observe(&Docker(&dockerd));
    drop(dockerd);

    let np_lab = lab("parity-netpath");
    np_lab.configure(&format!(r#"{{"bip": "{GATEWAY}/24", "dns": ["{GATEWAY}"]}}"#)).unwrap();
    let netpath = observe(&Netpath(&np_lab));

    let mut differences = Vec::new();
    for (what, d) in &docker {
        let n = &netpath[what];
        if d != n {
            differences.push(format!("--- {what}\ndocker:\n{d}\nnetpath:\n{n}"));
        }
    }
    assert!(differences.is_empty(), "netpath differs from Docker 20.10:\n{}", differences.join("\n"));
}
