//! NAT in eBPF, checked at the receiver: masquerade to the outside, ports
//! published in every Docker form, hairpin, ICMP errors through the NAT,
//! and conntrack hygiene. No iptables rule and no proxy process anywhere.
use netpath_common::{Program, Reason};
use netpath_tests::{At, Lab, lab, output, probe, tcp_check, transfer, words};

const HOST: &str = "198.18.0.2";
const OUTSIDE: &str = "198.18.0.1";

fn counters(lab: &Lab, p: Program) -> netpath_common::Counters {
    lab.datapath().counters(p).unwrap()
}

fn ping(lab: &Lab, at: At, dst: &str) -> bool {
    let mut cmd = match at {
        At::Sandbox(n) => lab.sandbox_cmd(n, "ping").unwrap(),
        At::Outside => lab.outside_cmd("ping").unwrap(),
        At::Host | At::HostCgroup => lab.host_cmd("ping").unwrap(),
        At::Far => lab.far_cmd("ping").unwrap(),
    };
    output(cmd.args(["-c", "2", "-i", "0.2", "-W", "1", dst])).unwrap().0 == 0
}

/// No process of the lab host listens on any of `ports`: no proxy.
fn assert_no_listener(lab: &Lab, ports: &[u16]) {
    let listeners = output(lab.host_cmd("ss").unwrap().args(["-Hlntu"])).unwrap().1;
    for line in listeners.lines() {
        let local = line.split_whitespace().nth(4).unwrap_or_default();
        let port: u16 = local.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        assert!(!ports.contains(&port), "something listens on a published port: {line}");
    }
}

#[test]
fn masquerade_to_the_outside() {
    let lab = lab("masq");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.40.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1"]).unwrap();
    let snat_before = counters(&lab, Program::ToUplink).packets(Reason::SnatNew);

    let (r, s) = tcp_check(&lab, At::Outside, 7000, At::Sandbox("a"), "198.18.0.1:7000", 1 << 20).unwrap();
    let peer = r["peer"].as_str().unwrap();
    assert!(peer.starts_with("198.18.0.2:"), "the outside sees the uplink address, not {peer}");
    assert!(s["local"].as_str().unwrap().starts_with("10.40.0.2:"), "{s}");

    let (r, s) = transfer(
        probe(&lab, At::Outside, &["udp-sink", "--port", "7001", "--count", "50"]),
        probe(&lab, At::Sandbox("a"), &["udp-send", "--to", "198.18.0.1:7001", "--count", "50"]),
    )
    .unwrap();
    assert_eq!(r["datagrams"], 50);
    let peers = r["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].as_str().unwrap().starts_with("198.18.0.2:"), "{r} / {s}");

    assert!(ping(&lab, At::Sandbox("a"), OUTSIDE), "echo replies come back through the NAT");
    assert!(counters(&lab, Program::ToUplink).packets(Reason::SnatNew) >= snat_before + 3);
    assert!(counters(&lab, Program::FromUplink).packets(Reason::Nat) > 0, "replies were translated on the way in");
    // The same, as operators see it.
    let stats: serde_json::Value = serde_json::from_str(&lab.netpath_ok(&["stats", "--json"]).unwrap()).unwrap();
    assert!(stats["to_uplink"]["SNAT_NEW"]["packets"].as_u64().unwrap() >= snat_before + 3, "{stats}");
    let table = lab.netpath_ok(&["conntrack", "ls"]).unwrap();
    assert!(
        table.lines().any(|l| l.contains("10.40.0.2:") && l.contains("198.18.0.2:") && l.contains("snat")),
        "the masqueraded flows are listed: {table}"
    );
}

#[test]
fn internal_and_unmasqueraded_networks() {
    let lab = lab("nomasq");
    lab.netpath_ok(&["network", "create", "--internal", "int", "--subnet", "10.41.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "i", "--network", "int"]).unwrap();
    let dropped = counters(&lab, Program::FromContainer).packets(Reason::DropInternalNetwork);
    assert!(!ping(&lab, At::Sandbox("i"), OUTSIDE), "an internal network has no egress");
    let (code, ..) = output(&mut probe(
        &lab,
        At::Sandbox("i"),
        &["tcp-send", "--to", "198.18.0.1:7002", "--bytes", "10", "--timeout", "1"],
    ))
    .unwrap();
    assert_ne!(code, 0);
    assert!(counters(&lab, Program::FromContainer).packets(Reason::DropInternalNetwork) > dropped);

    lab.netpath_ok(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.42.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
    ])
    .unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "p", "--network", "plain"]).unwrap();
    // Without NAT the outside needs a route back to the sandbox subnet.
    let (code, ..) =
        output(lab.outside_cmd("ip").unwrap().args(["route", "add", "10.42.0.0/24", "via", HOST])).unwrap();
    assert_eq!(code, 0);
    let (r, _) = tcp_check(&lab, At::Outside, 7003, At::Sandbox("p"), "198.18.0.1:7003", 4096).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("10.42.0.2:"), "source is the sandbox address: {r}");
}

/// Connects from the outside to HOST:host_port and checks the server in
/// `sandbox` on `container_port` saw the client's own address.
fn reach_published(lab: &Lab, sandbox: &str, container_port: u16, host_addr: &str, host_port: u16) {
    let (r, s) =
        tcp_check(lab, At::Sandbox(sandbox), container_port, At::Outside, &format!("{host_addr}:{host_port}"), 2048)
            .unwrap_or_else(|e| panic!("{host_addr}:{host_port} -> {sandbox}:{container_port}: {e:#}"));
    assert_eq!(r["peer"], s["local"], "the sandbox sees the real client");
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.1:"));
    assert!(r["local"].as_str().unwrap().ends_with(&format!(":{container_port}")));
}

#[test]
fn every_publish_form_from_the_outside() {
    let lab = lab("publish");
    lab.in_host(|r| r.add_address(r.require_index(netpath_lab::fixture::HOST_UPLINK)?, "198.18.0.3".parse()?, 24))
        .unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.43.0.0/24"]).unwrap();
    let before_ranges = lab.datapath().range_slots().map(|s| s.iter().filter(|r| r.proto != 0).count()).unwrap_or(0);
    lab.netpath_ok(&words(
        "run -d --name web --network n1 -p 80 -p 8080:81 -p 198.18.0.2::82 -p 198.18.0.2:8083:83 \
         -p 9000-9999:9000-9999 -p 10000-10009:84 -p 5353:53/udp \
         -p 90/udp -p 198.18.0.2::91/udp -p 198.18.0.2:8092:92/udp -p 7000-7009:7000-7009/udp",
    ))
    .unwrap();
    let port = lab.netpath_ok(&["port", "web"]).unwrap();
    let mut lines: Vec<&str> = port.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 4 + 1000 + 1 + 1 + 3 + 10, "{port}");
    for expected in [
        "80/tcp -> 0.0.0.0:32768",
        "81/tcp -> 0.0.0.0:8080",
        "82/tcp -> 198.18.0.2:32769",
        "83/tcp -> 198.18.0.2:8083",
        "9000/tcp -> 0.0.0.0:9000",
        "9999/tcp -> 0.0.0.0:9999",
        "84/tcp -> 0.0.0.0:10000",
        "53/udp -> 0.0.0.0:5353",
        "90/udp -> 0.0.0.0:32768",
        "91/udp -> 198.18.0.2:32769",
        "92/udp -> 198.18.0.2:8092",
        "7005/udp -> 0.0.0.0:7005",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{port}");
    }
    assert_eq!(lab.netpath_ok(&["port", "web", "81/tcp"]).unwrap().trim(), "0.0.0.0:8080");
    let ranges = lab.datapath().range_slots().unwrap().iter().filter(|r| r.proto != 0).count();
    assert_eq!(ranges, before_ranges + 2, "a 1,000-port range (and a 10-port one) is one map entry each");
    let singles = lab.datapath().published().unwrap().keys().count();
    assert_eq!(singles, 9, "one entry per single port");

    reach_published(&lab, "web", 80, HOST, 32768);
    reach_published(&lab, "web", 81, HOST, 8080);
    reach_published(&lab, "web", 81, "198.18.0.3", 8080);
    reach_published(&lab, "web", 82, HOST, 32769);
    reach_published(&lab, "web", 83, HOST, 8083);
    reach_published(&lab, "web", 9000, HOST, 9000);
    reach_published(&lab, "web", 9537, HOST, 9537);
    reach_published(&lab, "web", 84, HOST, 10000);
    // Bound to one host address: not reachable through another.
    let (code, ..) = output(&mut probe(
        &lab,
        At::Outside,
        &["tcp-send", "--to", "198.18.0.3:8083", "--bytes", "1", "--timeout", "1"],
    ))
    .unwrap();
    assert_ne!(code, 0, "198.18.0.3:8083 must not lead to a port bound to 198.18.0.2");

    for (cport, host) in [
        (53, "198.18.0.2:5353"),
        (90, "198.18.0.2:32768"),
        (91, "198.18.0.2:32769"),
        (92, "198.18.0.2:8092"),
        (7005, "198.18.0.2:7005"),
    ] {
        let (r, s) = transfer(
            probe(&lab, At::Sandbox("web"), &["udp-sink", "--port", &cport.to_string(), "--count", "20"]),
            probe(&lab, At::Outside, &["udp-send", "--to", host, "--count", "20"]),
        )
        .unwrap();
        assert_eq!(r["datagrams"], 20, "{host} -> {cport}/udp");
        assert_eq!(r["peers"], serde_json::json!([s["local"]]), "{host}: the sandbox sees the real client");
    }
    let (mut sink, mut sink_out) = netpath_lab::probes::start_sink(probe(
        &lab,
        At::Sandbox("web"),
        &words("udp-sink --port 92 --count 1 --timeout 2"),
    ))
    .unwrap();
    let (code, ..) =
        output(&mut probe(&lab, At::Outside, &words("udp-ask --to 198.18.0.3:8092 --connected --timeout 1"))).unwrap();
    assert_eq!(code, 1, "the host itself refuses 198.18.0.3:8092");
    let mut r = String::new();
    std::io::Read::read_to_string(&mut sink_out, &mut r).unwrap();
    sink.wait().unwrap();
    assert!(r.contains(r#""datagrams":0"#), "a UDP port bound to 198.18.0.2 is not reachable on 198.18.0.3: {r}");
    // Nothing listens on 92/udp now: the sandbox's port unreachable reaches
    // the client translated, as if the host had answered.
    let before = counters(&lab, Program::ToUplink).packets(Reason::IcmpErrorTranslated);
    let (code, out, _) =
        output(&mut probe(&lab, At::Outside, &words("udp-ask --to 198.18.0.2:8092 --connected --timeout 3"))).unwrap();
    assert_eq!((code, out.contains(r#""refused":true"#)), (1, true), "{out}");
    assert!(counters(&lab, Program::ToUplink).packets(Reason::IcmpErrorTranslated) > before);

    // Taken ports are refused; removing the sandbox frees them.
    let (code, _, err) =
        output(&mut lab.netpath(&["run", "-d", "--name", "web2", "--network", "n1", "-p", "8080:80"]).unwrap())
            .unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("port is already allocated"), "{err}");
    assert_no_listener(&lab, &[32768, 32769, 8080, 8083, 9000, 9999, 10000, 5353, 8092, 7005]);
    lab.netpath_ok(&["rm", "-f", "web"]).unwrap();
    assert_eq!(lab.datapath().published().unwrap().keys().count(), 0);
    assert_eq!(lab.datapath().range_slots().unwrap().iter().filter(|r| r.proto != 0).count(), 0);
    assert_eq!(lab.datapath().config().unwrap().published_range_count, 0);
    lab.netpath_ok(&["run", "-d", "--name", "web2", "--network", "n1", "-p", "8080:80"]).unwrap();
}

#[test]
fn hairpin_from_self_and_sibling() {
    let lab = lab("hairpin");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.44.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "web", "--network", "n1", "--ip", "10.44.0.10", "-p", "8080:80"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "sib", "--network", "n1", "--ip", "10.44.0.20"]).unwrap();
    let (r, _) = tcp_check(&lab, At::Sandbox("web"), 80, At::Sandbox("sib"), "198.18.0.2:8080", 100_000).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("10.44.0.20:"), "a sibling keeps its address: {r}");
    let (r, _) = tcp_check(&lab, At::Sandbox("web"), 80, At::Sandbox("web"), "198.18.0.2:8080", 100_000).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("10.44.0.1:"), "to itself, through the gateway: {r}");
    let (r, _) = tcp_check(&lab, At::Sandbox("web"), 80, At::Sandbox("sib"), "10.44.0.1:8080", 1000).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("10.44.0.20:"), "via the gateway address too: {r}");
    assert!(counters(&lab, Program::FromContainer).packets(Reason::DnatNew) >= 3);
}

#[test]
fn icmp_errors_reach_the_sandbox_translated() {
    let lab = lab("pmtu");
    let far = lab.add_far_host(1000).unwrap().to_string();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.45.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1"]).unwrap();
    assert!(ping(&lab, At::Sandbox("a"), &far), "small packets pass");
    let before = counters(&lab, Program::FromUplink).packets(Reason::IcmpErrorTranslated);
    let (_, out, _) =
        output(lab.sandbox_cmd("a", "ping").unwrap().args(["-M", "do", "-s", "1300", "-c", "2", "-W", "1", &far]))
            .unwrap();
    assert!(out.contains("mtu = 1000") || out.contains("mtu=1000"), "the sandbox was told the path MTU: {out}");
    assert!(counters(&lab, Program::FromUplink).packets(Reason::IcmpErrorTranslated) > before);
    let (_, route, _) = output(lab.sandbox_cmd("a", "ip").unwrap().args(["route", "get", &far])).unwrap();
    assert!(route.contains("mtu 1000"), "the route cache learned it: {route}");
    // Port unreachable about a masqueraded UDP flow reaches the socket.
    let before = counters(&lab, Program::FromUplink).packets(Reason::IcmpErrorTranslated);
    let (code, out, _) =
        output(&mut probe(&lab, At::Sandbox("a"), &words("udp-ask --to 198.18.0.1:9 --connected --timeout 3")))
            .unwrap();
    assert_eq!(code, 1);
    assert!(out.contains(r#""refused":true"#), "the sandbox's socket saw the port unreachable: {out}");
    assert!(counters(&lab, Program::FromUplink).packets(Reason::IcmpErrorTranslated) > before);
    // Time exceeded from the router beyond the host: what traceroute needs.
    let (_, out, _) =
        output(lab.sandbox_cmd("a", "ping").unwrap().args(["-t", "2", "-c", "1", "-W", "2", &far])).unwrap();
    assert!(out.contains("From 198.18.0.1") && out.contains("Time to live exceeded"), "{out}");
}

#[test]
fn conntrack_is_bounded_and_cleaned() {
    let lab = lab("conntrack");
    lab.configure(r#"{"conntrack-max": 1024, "conntrack-timeouts": {"tcp-closing": 1}}"#).unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.46.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1"]).unwrap();
    let count = 1500;
    let (served, churn) = transfer(
        probe(&lab, At::Outside, &["tcp-serve", "--port", "7100", "--max", &count.to_string(), "--timeout", "120"]),
        probe(&lab, At::Sandbox("a"), &["tcp-churn", "--to", "198.18.0.1:7100", "--count", &count.to_string()]),
    )
    .unwrap();
    assert_eq!(churn["ok"], count, "every short connection got through a table smaller than the load: {churn}");
    assert_eq!(served["served"], count);
    // conntrack-max counts connections (two entries each), as Linux's does.
    let (confirmed, new) = netpath::datapath::conntrack_capacity(Some(1024));
    let entries = lab.datapath().conntrack_entries().unwrap().len();
    assert!(entries <= (confirmed + new) as usize, "the tables stay within their size: {entries}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    lab.netpath_ok(&["conntrack", "gc"]).unwrap();
    let left = lab.datapath().conntrack_entries().unwrap().len();
    assert!(left < 10, "closed connections expire: {left} left");

    lab.netpath_ok(&["run", "-d", "--name", "b", "--network", "n1", "-p", "8080:80"]).unwrap();
    tcp_check(&lab, At::Sandbox("b"), 80, At::Outside, "198.18.0.2:8080", 10).unwrap();
    let ip = [10, 46, 0, 3];
    let involves = |lab: &Lab| {
        lab.datapath()
            .conntrack_entries()
            .unwrap()
            .iter()
            .filter(|(k, e)| [k.saddr, k.daddr, e.rewrite.saddr, e.rewrite.daddr].contains(&ip))
            .count()
    };
    assert!(involves(&lab) > 0);
    lab.netpath_ok(&["rm", "-f", "b"]).unwrap();
    assert_eq!(involves(&lab), 0, "a removed sandbox leaves no conntrack entry");
}

#[test]
fn host_local_access_at_the_socket_layer() {
    let lab = lab("hostlocal");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.47.0.0/24"]).unwrap();
    lab.netpath_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "n1",
        "--ip",
        "10.47.0.10",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8081:81",
        "-p",
        "5353:53/udp",
    ])
    .unwrap();
    let before = counters(&lab, Program::Socket).packets(Reason::SocketRedirect);
    for (to, port) in [("127.0.0.1:8080", 80), ("198.18.0.2:8080", 80), ("10.47.0.1:8080", 80), ("127.0.0.1:8081", 81)]
    {
        let (r, _) = tcp_check(&lab, At::Sandbox("web"), port, At::HostCgroup, to, 50_000)
            .unwrap_or_else(|e| panic!("host -> {to}: {e:#}"));
        assert!(r["peer"].as_str().unwrap().starts_with("10.47.0.1:"), "the host reaches it from the gateway: {r}");
    }
    let (echo, ask) = transfer(
        probe(&lab, At::Sandbox("web"), &["udp-echo", "--port", "53"]),
        probe(&lab, At::HostCgroup, &["udp-ask", "--to", "127.0.0.1:5353"]),
    )
    .unwrap();
    assert_eq!(ask["echoed"], true, "{ask} / {echo}");
    assert_eq!(ask["from"], "127.0.0.1:5353", "the answer appears to come from where the question went");
    assert!(counters(&lab, Program::Socket).packets(Reason::SocketRedirect) >= before + 5);
    // Outside the watched cgroup nothing is steered: plain loopback has no listener.
    let (code, ..) =
        output(&mut probe(&lab, At::Host, &["tcp-send", "--to", "127.0.0.1:8080", "--bytes", "1", "--timeout", "1"]))
            .unwrap();
    assert_ne!(code, 0);
    assert_no_listener(&lab, &[8080, 8081, 5353]);
    let sysctl = output(lab.host_cmd("cat").unwrap().arg("/proc/sys/net/ipv4/conf/all/route_localnet")).unwrap().1;
    assert_eq!(sysctl.trim(), "0", "no route_localnet in the host namespace");
}

#[test]
fn ten_thousand_published_ports() {
    let lab = lab("manyports");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.48.0.0/24"]).unwrap();
    // Through the CLI's own code path: one sandbox publishing 10,000 ports.
    let mut args: Vec<String> = ["run", "-d", "--name", "many", "--network", "n1"].map(String::from).to_vec();
    for port in 20000..30000 {
        args.push("-p".into());
        args.push(format!("{port}:80"));
    }
    lab.netpath_ok(&args).unwrap();
    assert_eq!(lab.datapath().published().unwrap().keys().count(), 10_000);
    for port in [20000, 24567, 29999] {
        reach_published(&lab, "many", 80, HOST, port);
    }
    lab.netpath_ok(&["run", "-d", "--name", "one", "--network", "n1", "-p", "30000:80"]).unwrap();
    assert_eq!(lab.datapath().published().unwrap().keys().count(), 10_001, "adding one changes one entry");
    reach_published(&lab, "one", 80, HOST, 30000);
    lab.netpath_ok(&["rm", "-f", "one"]).unwrap();
    assert_eq!(lab.datapath().published().unwrap().keys().count(), 10_000, "removing one changes one entry");
    let rules = output(&mut lab.host_cmd("iptables-save").unwrap()).unwrap().1;
    assert!(!rules.lines().any(|l| l.starts_with("-A")), "{rules}");
    let ruleset = output(lab.host_cmd("nft").unwrap().args(["list", "ruleset"])).unwrap().1;
    assert!(ruleset.trim().is_empty(), "{ruleset}");
}
