//! Docker's network semantics: modes, user-defined networks with isolation
//! and names, ICC and links, and per-sandbox host configuration.
use netpath_common::{Program, Reason};
use netpath_tests::{At, Lab, lab, output, probe, tcp_check, transfer, words};
use serde_json::Value;

/// `netpath exec NAME -- ARGS...`: (exit code, stdout).
fn exec(lab: &Lab, name: &str, args: &str) -> (i32, String) {
    let mut argv = vec!["exec", name, "--"];
    argv.extend(words(args));
    let (code, out, _) = output(&mut lab.netpath(&argv).unwrap()).unwrap();
    (code, out)
}

/// Runs the rig's `dig` probe inside a sandbox through `exec`, so it uses
/// the sandbox's own /etc/resolv.conf.
fn dig(lab: &Lab, name: &str, query: &str) -> Value {
    let bin = lab.lab_bin.display().to_string();
    let (code, out) = exec(lab, name, &format!("{bin} dig --name {query}"));
    assert_eq!(code, 0, "dig {query} from {name}: {out}");
    serde_json::from_str(out.trim()).unwrap()
}

fn resolves(lab: &Lab, from: &str, query: &str) -> Vec<String> {
    let v = dig(lab, from, query);
    v["answers"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn can_connect(lab: &Lab, from: &str, to: &str) -> bool {
    let (code, ..) =
        output(&mut probe(lab, At::Sandbox(from), &words(&format!("tcp-send --to {to} --bytes 1 --timeout 1"))))
            .unwrap();
    code == 0
}

fn links_of(lab: &Lab, at: &str) -> String {
    let (code, out) = exec(lab, at, "ip -o link");
    assert_eq!(code, 0);
    let mut names: Vec<String> =
        out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap().to_string()).collect();
    names.sort();
    names.join(",")
}

#[test]
fn none_host_and_container_modes() {
    let lab = lab("modes");
    lab.netpath_ok(&words("run -d --name n --network none")).unwrap();
    assert_eq!(links_of(&lab, "n"), "lo");
    let (_, lo) = exec(&lab, "n", "ip -o link show lo");
    assert!(lo.contains("UP"), "lo is up: {lo}");

    lab.netpath_ok(&words("run -d --name h --network host")).unwrap();
    let mut host_links: Vec<String> = lab.in_host(|r| r.link_names()).unwrap();
    host_links.sort();
    assert_eq!(links_of(&lab, "h"), host_links.join(","), "host mode shares the host's interfaces");

    lab.netpath_ok(&words("network create n1 --subnet 10.60.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name b1 --network n1")).unwrap();
    lab.netpath_ok(&words("run -d --name j --network container:b1")).unwrap();
    let (_, a) = exec(&lab, "b1", "ip -o addr show eth0");
    let (_, b) = exec(&lab, "j", "ip -o addr show eth0");
    assert!(a.contains("10.60.0.2/24") && a == b, "same eth0: {a} / {b}");
    let (_, a) = exec(&lab, "b1", "ip -o link show eth0");
    let (_, b) = exec(&lab, "j", "ip -o link show eth0");
    assert_eq!(a, b, "same MAC");
    // A server in one is reachable from the other on loopback.
    let bin = lab.lab_bin.display().to_string();
    let mut sink = lab.netpath(&words(&format!("exec b1 -- {bin} tcp-sink --port 7000 --timeout 10"))).unwrap();
    sink.stdin(std::process::Stdio::null());
    let send = lab.netpath(&words(&format!("exec j -- {bin} tcp-send --to 127.0.0.1:7000 --bytes 5000"))).unwrap();
    let (r, s) = transfer(sink, send).unwrap();
    assert_eq!(r["sha256"], s["sha256"]);

    let (code, _, err) = output(&mut lab.netpath(&words("rm b1")).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("in use by j"), "{err}");
    lab.netpath_ok(&words("rm -f b1")).unwrap();
    let ps: Vec<Value> = serde_json::from_str(&lab.netpath_ok(&["ps", "--json"]).unwrap()).unwrap();
    let names: Vec<&str> = ps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["h", "n"], "the owner and the sandbox sharing its namespaces are gone");
}

fn config(lab: &Lab, json: &str) {
    lab.configure(json).unwrap();
}

#[test]
fn user_defined_networks_resolve_and_isolate() {
    let lab = lab("userdef");
    config(&lab, r#"{"dns": ["198.18.0.1"]}"#);
    let (mut stub, _) = netpath_lab::probes::start_sink(probe(
        &lab,
        At::Outside,
        &words("dns-stub --name upstream.test --addr 198.18.0.99"),
    ))
    .unwrap();
    lab.netpath_ok(&words("network create neta --subnet 10.61.0.0/24")).unwrap();
    lab.netpath_ok(&words("network create netb --subnet 10.62.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name a1 --network neta --network-alias alpha")).unwrap();
    lab.netpath_ok(&words("run -d --name a2 --network neta")).unwrap();
    lab.netpath_ok(&words("run -d --name b1 --network netb")).unwrap();

    assert_eq!(resolves(&lab, "a2", "a1"), ["10.61.0.2"]);
    assert_eq!(resolves(&lab, "a2", "alpha"), ["10.61.0.2"]);
    assert_eq!(resolves(&lab, "a1", "a2"), ["10.61.0.3"]);
    let (code, out) = exec(&lab, "a2", "getent hosts alpha");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("10.61.0.2"), "{out}");
    let (code, out) = exec(&lab, "a1", "ping -c 1 -W 2 a2");
    assert_eq!(code, 0, "ping by name: {out}");
    // Over TCP too, as resolvers retry after a truncated answer.
    let bin = lab.lab_bin.display().to_string();
    let (code, out) = exec(&lab, "a1", &format!("{bin} dig --tcp --name a2"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""answers":["10.61.0.3"]"#), "DNS over TCP: {out}");
    // Other networks' names do not resolve; unknown names go upstream.
    assert!(resolves(&lab, "a1", "b1").is_empty());
    assert!(resolves(&lab, "b1", "alpha").is_empty());
    assert_eq!(resolves(&lab, "a1", "upstream.test"), ["198.18.0.99"]);
    let (_, resolv) = exec(&lab, "a1", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.61.0.1"), "{resolv}");

    // Isolation in the data path, counted; both still reach the outside.
    let dropped = lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::DropOtherNetwork);
    assert!(!can_connect(&lab, "a1", "10.62.0.2:80"));
    assert!(lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::DropOtherNetwork) > dropped);
    for s in ["a1", "b1"] {
        tcp_check(&lab, At::Outside, 7010, At::Sandbox(s), "198.18.0.1:7010", 1000).unwrap();
    }

    // connect/disconnect take effect at once.
    lab.netpath_ok(&words("network connect --alias beta netb a1")).unwrap();
    assert_eq!(links_of(&lab, "a1"), "eth0,eth1,lo");
    assert_eq!(resolves(&lab, "a1", "b1"), ["10.62.0.2"]);
    assert_eq!(resolves(&lab, "b1", "beta"), ["10.62.0.3"]);
    tcp_check(&lab, At::Sandbox("b1"), 7011, At::Sandbox("a1"), "10.62.0.2:7011", 1000).unwrap();
    let inspect: Value = serde_json::from_str(&lab.netpath_ok(&words("network inspect netb")).unwrap()).unwrap();
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 2);
    lab.netpath_ok(&words("network disconnect netb a1")).unwrap();
    assert_eq!(links_of(&lab, "a1"), "eth0,lo");
    assert!(resolves(&lab, "a1", "b1").is_empty());
    assert!(resolves(&lab, "b1", "beta").is_empty());
    assert!(!can_connect(&lab, "a1", "10.62.0.2:7011"));

    let _ = stub.kill();
    let _ = stub.wait();
}

#[test]
fn icc_off_with_links() {
    let lab = lab("icc");
    config(&lab, r#"{"icc": false, "bip": "172.30.0.1/24"}"#);
    lab.netpath_ok(&words("run -d --name redis --expose 6379")).unwrap();
    lab.netpath_ok(&words("run -d --name other")).unwrap();
    lab.netpath_ok(&words("run -d --name web --link redis:db")).unwrap();
    let redis_ip = "172.30.0.2";
    let dropped = lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::DropIcc);
    assert!(!can_connect(&lab, "other", &format!("{redis_ip}:6379")), "ICC off: no talk");
    assert!(lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::DropIcc) > dropped);
    let (r, _) =
        tcp_check(&lab, At::Sandbox("redis"), 6379, At::Sandbox("web"), &format!("{redis_ip}:6379"), 1000).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("172.30.0.4:"), "the linked pair talks: {r}");

    let (_, env) = exec(&lab, "web", "env");
    for line in [
        "DB_NAME=/web/db",
        "DB_PORT=tcp://172.30.0.2:6379",
        "DB_PORT_6379_TCP=tcp://172.30.0.2:6379",
        "DB_PORT_6379_TCP_ADDR=172.30.0.2",
        "DB_PORT_6379_TCP_PORT=6379",
        "DB_PORT_6379_TCP_PROTO=tcp",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    let ps: Vec<Value> = serde_json::from_str(&lab.netpath_ok(&["ps", "--json"]).unwrap()).unwrap();
    let redis_id = ps.iter().find(|s| s["name"] == "redis").unwrap()["id"].as_str().unwrap()[..12].to_string();
    let (_, hosts) = exec(&lab, "web", "cat /etc/hosts");
    assert!(hosts.lines().any(|l| l == format!("{redis_ip}\tdb {redis_id} redis")), "{hosts}");
    let (code, out) = exec(&lab, "web", "getent hosts db");
    assert_eq!(code, 0);
    assert!(out.starts_with(redis_ip), "{out}");
}

#[test]
fn per_sandbox_host_configuration() {
    let lab = lab("hostcfg");
    let host_hosts = std::fs::read("/etc/hosts").unwrap();
    let host_resolv = std::fs::read("/etc/resolv.conf").unwrap();
    lab.netpath_ok(&words(
        "run -d --name c -h docker.test.com --dns 1.1.1.1 --dns-search example.com --add-host qq.com:2.2.2.2 \
         --add-host gw:host-gateway",
    ))
    .unwrap();
    let (_, hostname) = exec(&lab, "c", "hostname");
    assert_eq!(hostname.trim(), "docker.test.com");
    let (_, hosts) = exec(&lab, "c", "cat /etc/hosts");
    assert_eq!(
        hosts,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n2.2.2.2\tqq.com\n\
         172.17.0.1\tgw\n172.17.0.2\tdocker.test.com docker\n"
    );
    let options: Vec<String> = String::from_utf8_lossy(&host_resolv)
        .lines()
        .filter_map(|l| l.strip_prefix("options"))
        .flat_map(|o| o.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    let mut expected = "search example.com\nnameserver 1.1.1.1\n".to_string();
    if !options.is_empty() {
        expected.push_str(&format!("options {}\n", options.join(" ")));
    }
    let (_, resolv) = exec(&lab, "c", "cat /etc/resolv.conf");
    assert_eq!(resolv, expected);
    lab.netpath_ok(&words("run -d --name o --dns 9.9.9.9 --dns-option ndots:2")).unwrap();
    let (_, resolv) = exec(&lab, "o", "cat /etc/resolv.conf");
    assert!(resolv.ends_with("nameserver 9.9.9.9\noptions ndots:2\n"), "{resolv}");
    assert_eq!(std::fs::read("/etc/hosts").unwrap(), host_hosts, "the host's files are untouched");
    assert_eq!(std::fs::read("/etc/resolv.conf").unwrap(), host_resolv);
}

#[test]
fn macvlan_sandbox_reaches_its_segment() {
    let lab = lab("macvlan");
    let parent = lab.add_segment("10.70.0.254".parse().unwrap(), 24).unwrap();
    lab.netpath_ok(&words(&format!(
        "network create -d macvlan -o parent={parent} --subnet 10.70.0.0/24 --gateway 10.70.0.254 mv"
    )))
    .unwrap();
    lab.netpath_ok(&words("run -d --name m --network mv")).unwrap();
    let (_, addr) = exec(&lab, "m", "ip -o -4 addr show eth0");
    assert!(addr.contains("10.70.0.1/24"), "{addr}");
    let (code, out) = exec(&lab, "m", "ping -c 2 -i 0.2 -W 2 10.70.0.254");
    assert_eq!(code, 0, "the sandbox reaches a peer on the segment: {out}");
    let (_, link) = exec(&lab, "m", "ip -d -o link show eth0");
    assert!(link.contains("macvlan"), "{link}");
    lab.netpath_ok(&words("rm m")).unwrap();
    lab.netpath_ok(&words("network rm mv")).unwrap();
}
