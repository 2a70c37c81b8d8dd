//! Docker on netpath: a real dockerd (hermetic in the lab host, in a
//! private mount namespace whose `/run/docker/plugins` holds only the
//! plugin's socket) with `docker network create -d netpath` networks. Every
//! claim is checked with packets at their receiver: containers reach each
//! other by name and address over netpath's fast path, published ports
//! reach a busybox httpd that sees the client's own address, masquerade
//! and ICC off work, removal leaves nothing behind, and a SIGKILLed plugin
//! stops no traffic and comes back.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use netpath::link::LinkCounters;
use netpath_common::{Program, Reason};
use netpath_lab::bench::systems::{docker::Dockerd, docker_netpath::Plugin, engine::Engine as _};
use netpath_tests::{lab, output, transfer};
use serde_json::Value;

const OUTSIDE: &str = "198.18.0.1";
const HOST: &str = "198.18.0.2";

fn docker(d: &Dockerd, line: &str) -> String {
    let args: Vec<&str> = line.split_whitespace().collect();
    d.docker(&args).unwrap_or_else(|e| panic!("{e:#}")).trim().to_string()
}

/// A command (a probe, `ip`) in a container's network namespace.
fn in_container(d: &Dockerd, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    netpath::netns::Join::net(d.netns_of(name).unwrap()).command(program).unwrap()
}

fn probe_in(lab: &netpath_tests::Lab, d: &Dockerd, name: &str, args: &[&str]) -> Command {
    let mut cmd = in_container(d, name, &lab.lab_bin);
    cmd.args(args);
    cmd
}

fn ip_of(d: &Dockerd, name: &str, network: &str) -> Ipv4Addr {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    d.docker(&["inspect", "-f", &f, name]).unwrap().trim().parse().unwrap()
}

/// `busybox wget` of `url` from the lab's outside namespace: the body.
fn fetch_from_outside(lab: &netpath_tests::Lab, url: &str) -> Option<String> {
    let mut cmd = lab.outside_cmd("timeout").unwrap();
    cmd.args(["5", "busybox", "wget", "-q", "-O-", url]);
    let (code, out, _) = output(&mut cmd).unwrap();
    // httpd listens on a dual-stack socket: IPv4 peers read `[::ffff:A]`.
    (code == 0).then(|| out.trim().trim_start_matches("[::ffff:").trim_end_matches(']').to_string())
}

fn forwarded(lab: &netpath_tests::Lab) -> u64 {
    lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::Forwarded)
}

/// What the lab host's firewall holds, both front ends.
fn firewall(lab: &netpath_tests::Lab) -> String {
    let mut all = String::new();
    for (program, args) in [("iptables-save", &[][..]), ("nft", &["list", "ruleset"][..])] {
        // A listing that failed would read as "no rule": it must not pass.
        let (code, out, err) = output(lab.host_cmd(program).unwrap().args(args)).unwrap();
        assert_eq!(code, 0, "{program}: {err}");
        all.push_str(&out);
    }
    all
}

/// The sandbox records netpath holds for Docker endpoints.
fn docker_sandboxes(lab: &netpath_tests::Lab) -> Vec<Value> {
    let all: Vec<Value> = serde_json::from_str(&lab.netpath_ok(&["ps", "--json"]).unwrap()).unwrap();
    all.into_iter().filter(|s| s["mode"]["external"]["owner"] == "docker").collect()
}

const HTTPD: &str = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
                     > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && exec httpd -f -p 80 -h /www";

#[test]
fn docker_containers_on_a_netpath_network() {
    let lab = lab("dkplugin");
    let base = lab.roots.state.parent().unwrap().to_path_buf();
    let plugins: PathBuf = base.join("plugins");
    let mut plugin = Plugin::start(&lab, &plugins).expect("starting the plugin");
    let mode =
        std::fs::metadata(&plugin.socket).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
    assert_eq!(mode & 0o777, 0o600, "the plugin's socket is root's only");
    // The userland proxy on, as Docker's default: it must start no
    // docker-proxy for netpath's ports.
    let d = Dockerd::start_with(&lab, true, Some(&plugins)).expect("dockerd in the lab");
    d.import_busybox().unwrap();
    let docker_host = format!("unix://{}", d.dir.join("docker.sock").display());

    // A network: Docker's IPAM, netpath's bridge, the Docker ID kept.
    let n1 = docker(&d, "network create -d netpath --subnet 10.88.0.0/24 n1");
    let nets: Value =
        serde_json::from_str(&lab.netpath_ok(&["network", "inspect", &format!("docker-{}", &n1[..12])]).unwrap())
            .unwrap();
    assert_eq!(nets[0]["Labels"]["io.netpath.engine.network-id"], n1.as_str(), "{nets}");
    assert_eq!(nets[0]["IPAM"]["Config"][0]["Subnet"], "10.88.0.0/24");

    // Two containers: by name (Docker's DNS), by address (netpath's fast path).
    docker(&d, "run -d --network n1 --name alpha bb sleep 1000000");
    docker(&d, "run -d --network n1 --name beta bb sleep 1000000");
    let (a_ip, b_ip) = (ip_of(&d, "alpha", "n1"), ip_of(&d, "beta", "n1"));
    assert!(a_ip.octets()[..3] == [10, 88, 0] && b_ip.octets()[..3] == [10, 88, 0], "{a_ip} {b_ip}");
    let resolv = docker(&d, "exec alpha cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 127.0.0.11"), "Docker's embedded DNS serves the container: {resolv}");
    let before = forwarded(&lab);
    let by_name = docker(&d, "exec alpha ping -c 3 -W 2 beta");
    assert!(by_name.contains(&format!("from {b_ip}")) && by_name.contains("3 packets received"), "{by_name}");
    assert!(forwarded(&lab) - before >= 6, "echo requests and replies took the fast path");
    let sandboxes = docker_sandboxes(&lab);
    assert_eq!(sandboxes.len(), 2, "one external sandbox per endpoint: {sandboxes:?}");
    let b_sandbox = sandboxes.iter().find(|s| s["attachments"][0]["ip"] == b_ip.to_string()).unwrap();
    let b_veth = b_sandbox["attachments"][0]["host_ifname"].as_str().unwrap().to_string();
    // A bulk TCP transfer a -> b: counted by the program, and b's host
    // veth transmits nothing (the bridge is skipped). Neighbours are
    // pinned first so that no ARP crosses the bridge meanwhile.
    for (at, peer) in [("alpha", b_ip), ("beta", a_ip)] {
        let (_, shown, _) = output(in_container(&d, at, "ip").args(["neigh", "show", &peer.to_string()])).unwrap();
        let mac = match shown.split_whitespace().skip_while(|w| *w != "lladdr").nth(1) {
            Some(mac) => mac.to_string(),
            None => docker(
                &d,
                &format!("exec {} cat /sys/class/net/eth0/address", if at == "alpha" { "beta" } else { "alpha" }),
            ),
        };
        let pin = ["neigh", "replace", &peer.to_string(), "lladdr", &mac, "dev", "eth0", "nud", "permanent"];
        assert_eq!(output(in_container(&d, at, "ip").args(pin)).unwrap().0, 0);
    }
    let tx = || -> LinkCounters { lab.in_host(|r| r.counters(&b_veth)).unwrap() };
    let (link_before, before) = (tx(), lab.datapath().counters(Program::FromContainer).unwrap());
    let bytes = 2 * 1024 * 1024;
    let (received, sent) = transfer(
        probe_in(&lab, &d, "beta", &["tcp-sink", "--port", "5001", "--timeout", "10"]),
        probe_in(&lab, &d, "alpha", &["tcp-send", "--to", &format!("{b_ip}:5001"), "--bytes", &bytes.to_string()]),
    )
    .unwrap();
    let after = lab.datapath().counters(Program::FromContainer).unwrap();
    assert_eq!((&received["bytes"], &received["sha256"]), (&sent["bytes"], &sent["sha256"]), "intact");
    assert!(received["peer"].as_str().unwrap().starts_with(&format!("{a_ip}:")));
    assert!(after.bytes(Reason::Forwarded) - before.bytes(Reason::Forwarded) >= bytes as u64);
    assert_eq!(tx().tx_packets, link_before.tx_packets, "b's host veth sent nothing: the bridge was skipped");

    // Published ports: a busybox httpd that tells whom it saw.
    let mut run = d.cmd();
    run.args(["run", "-d", "--network", "n1", "--name", "web", "-p", "8080:80", "-p", "80", "bb", "sh", "-c", HTTPD]);
    netpath_lab::fixture::check(&run.output().unwrap(), "docker run web").unwrap();
    let port = lab.netpath_ok(&["port", "web", "--docker-host", &docker_host]).unwrap();
    let lines: Vec<&str> = port.lines().collect();
    assert!(lines.contains(&"80/tcp -> 0.0.0.0:8080"), "netpath port shows Docker's container: {port}");
    let ephemeral = lines
        .iter()
        .filter_map(|l| l.strip_prefix("80/tcp -> 0.0.0.0:"))
        .map(|p| p.parse::<u16>().unwrap())
        .find(|&p| p != 8080)
        .expect("-p 80 got a host port");
    assert!(ephemeral >= 32768, "{port}");
    assert_eq!(lab.netpath_ok(&["port", "web", "80/tcp", "--docker-host", &docker_host]).unwrap().lines().count(), 2);
    assert_eq!(docker(&d, "port web"), "", "Docker itself shows nothing for a remote driver (moby/libnetwork#2451)");
    for host_port in [8080, ephemeral] {
        let url = format!("http://{HOST}:{host_port}/cgi-bin/peer");
        let mut seen = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.is_none() && Instant::now() < deadline {
            seen = fetch_from_outside(&lab, &url);
            if seen.is_none() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if seen.is_none() {
            let mut cmd = lab.outside_cmd("timeout").unwrap();
            cmd.args(["5", "busybox", "wget", "-O-", &url]);
            eprintln!("wget: {:?}", output(&mut cmd));
            eprintln!(
                "web: {:?}",
                d.docker(&["exec", "web", "sh", "-c", "ps; ip addr; ip route; wget -O- http://127.0.0.1/cgi-bin/peer"])
            );
            eprintln!("ps: {}", lab.netpath_ok(&["ps", "--json"]).unwrap());
            eprintln!("stats: {}", lab.netpath_ok(&["stats"]).unwrap());
        }
        assert_eq!(seen.as_deref(), Some(OUTSIDE), "httpd saw the client's own address through {host_port}");
    }

    // Masquerade: a container reaches the outside, which sees the host's address.
    let (received, _) = transfer(
        netpath_tests::probe(&lab, netpath_tests::At::Outside, &["tcp-sink", "--port", "7100", "--timeout", "10"]),
        probe_in(&lab, &d, "alpha", &["tcp-send", "--to", &format!("{OUTSIDE}:7100"), "--bytes", "1000"]),
    )
    .unwrap();
    assert!(received["peer"].as_str().unwrap().starts_with(&format!("{HOST}:")), "masqueraded: {received}");

    // ICC off, as Docker's bridge driver spells it.
    let n2 =
        docker(&d, "network create -d netpath --subnet 10.89.0.0/24 -o com.docker.network.bridge.enable_icc=false n2");
    docker(&d, "run -d --network n2 --name gamma bb sleep 1000000");
    docker(&d, "run -d --network n2 --name victim bb sleep 1000000");
    let v_ip = ip_of(&d, "victim", "n2");
    let dropped = lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::DropIcc);
    let (at_victim, sent) = transfer(
        probe_in(&lab, &d, "victim", &["udp-sink", "--port", "6000", "--count", "20", "--timeout", "2"]),
        probe_in(&lab, &d, "gamma", &["udp-send", "--to", &format!("{v_ip}:6000"), "--count", "20", "--size", "200"]),
    )
    .unwrap();
    assert_eq!(sent["datagrams"], 20);
    assert_eq!(at_victim["datagrams"], 0, "nothing reached the victim: {at_victim}");
    assert!(lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::DropIcc) >= dropped + 20);
    let (_, reach, _) = output(d.cmd().args(["exec", "gamma", "ping", "-c", "1", "-W", "2", OUTSIDE])).unwrap();
    assert!(reach.contains("1 packets received"), "ICC off still lets it out: {reach}");

    // Nothing of Docker's own for these containers: no rule naming their
    // addresses or ports, no docker-proxy; and none of netpath's either
    // (nothing names netpath or the networks' bridges), although dockerd
    // set the FORWARD policy to DROP: container egress (masquerade and the
    // published ports' replies, all checked above) leaves by the data
    // path's own redirect to the uplink, never through FORWARD.
    let rules = firewall(&lab);
    assert!(rules.contains(":FORWARD DROP"), "dockerd's FORWARD policy is DROP:\n{rules}");
    let bridges: Vec<String> =
        [&n1, &n2].iter().map(|id| netpath_tests::bridge_of(&lab, &format!("docker-{}", &id[..12])).unwrap()).collect();
    for needle in ["10.88.0.", "10.89.0.", "8080", &ephemeral.to_string(), "netpath", &bridges[0], &bridges[1]] {
        assert!(!rules.contains(needle), "the host firewall names {needle}:\n{rules}");
    }
    assert!(
        lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::RedirectUplink) > 0,
        "container egress was redirected to the uplink by the data path"
    );
    assert!(d.proxy_pids().is_empty(), "no docker-proxy runs for netpath's ports");

    // The plugin killed while containers run: the pinned data path carries on.
    plugin.kill();
    let before = forwarded(&lab);
    let (received, _) = transfer(
        probe_in(&lab, &d, "beta", &["tcp-sink", "--port", "5002", "--timeout", "10"]),
        probe_in(&lab, &d, "alpha", &["tcp-send", "--to", &format!("{b_ip}:5002"), "--bytes", "100000"]),
    )
    .unwrap();
    assert_eq!(received["bytes"], 100000, "a -> b without the plugin");
    assert!(forwarded(&lab) > before);
    assert_eq!(fetch_from_outside(&lab, &format!("http://{HOST}:8080/cgi-bin/peer")).as_deref(), Some(OUTSIDE));
    // Restarted (the stale socket file replaced): dockerd works with it again.
    let mut plugin = Plugin::start(&lab, &plugins).expect("restarting the plugin");
    docker(&d, "run -d --network n1 --name late bb sleep 1000000");
    let late = ip_of(&d, "late", "n1");
    let pinged = docker(&d, &format!("exec late ping -c 1 -W 2 {a_ip}"));
    assert!(pinged.contains("1 packets received"), "{late}: {pinged}");
    docker(&d, "rm -f late");

    // Removal leaves no link, map entry, pin or record.
    let veths: Vec<String> = docker_sandboxes(&lab)
        .iter()
        .map(|s| s["attachments"][0]["host_ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(veths.len(), 5);
    docker(&d, "rm -f alpha beta web gamma victim");
    docker(&d, "network rm n1 n2");
    assert!(docker_sandboxes(&lab).is_empty(), "no endpoint record left");
    let nets = lab.netpath_ok(&["network", "ls", "--format", "{{.Name}}"]).unwrap();
    assert!(!nets.contains("docker-"), "no network left: {nets}");
    let links = lab.in_host(|r| r.link_names()).unwrap();
    for v in &veths {
        assert!(!links.contains(v), "{v} is gone");
    }
    assert!(!links.iter().any(|l| l.starts_with("vnp") || l.starts_with("br-")), "{links:?}");
    let dp = lab.datapath();
    let endpoints: Vec<_> = dp.endpoints().unwrap().keys().filter_map(|k| k.ok()).collect();
    assert!(endpoints.is_empty(), "no endpoint entry left: {} left", endpoints.len());
    assert_eq!(dp.published().unwrap().keys().count(), 0, "no published port entry left");
    let pins: Vec<String> = std::fs::read_dir(lab.roots.bpf.join("links"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    for v in &veths {
        assert!(!pins.iter().any(|p| p.starts_with(&format!("{v}@"))), "pin of {v} left: {pins:?}");
    }
    let check = lab.netpath_ok(&["system", "check"]).unwrap();
    assert!(check.trim().is_empty(), "netpath finds nothing to repair: {check}");
    plugin.kill();
    drop(d);
}

/// One plugin call the way dockerd makes it (HTTP/1.1 POST on the socket);
/// the status and JSON body, or the error of a connection the plugin died on.
fn call(socket: &Path, method: &str, body: &Value) -> Result<(u16, Value), String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.to_string();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, json) = answer.split_once("\r\n\r\n").ok_or("no answer")?;
    assert!(head.contains("application/vnd.docker.plugins.v1+json"), "{head}");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    Ok((status, serde_json::from_str(json).map_err(|e| format!("{e}: {json}"))?))
}

/// A Docker-style ID whose first 12 digits say `n`.
fn docker_id(n: u32) -> String {
    format!("{n:012x}{}", "ab".repeat(26))
}

#[test]
fn a_plugin_killed_in_the_middle_of_a_call_leaves_nothing_a_restart_cannot_finish() {
    let lab = lab("dkcrash");
    let dir = lab.roots.state.parent().unwrap().join("plugins");
    let mut plugin = Plugin::start(&lab, &dir).expect("starting the plugin");
    let socket = plugin.socket.clone();
    let (status, caps) = call(&socket, "NetworkDriver.GetCapabilities", &serde_json::json!({})).unwrap();
    assert_eq!((status, caps["Scope"].as_str()), (200, Some("local")));
    let net = docker_id(0xfeed);
    let create = serde_json::json!({"NetworkID": net, "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.90.0.0/24", "Gateway": "10.90.0.1/24"}]});
    assert_eq!(call(&socket, "NetworkDriver.CreateNetwork", &create).unwrap().0, 200);
    let endpoint = |n: u32| {
        serde_json::json!({"NetworkID": net, "EndpointID": docker_id(n),
            "Interface": {"Address": format!("10.90.0.{}/24", 10 + n), "MacAddress": ""}})
    };
    let delete = |n: u32| serde_json::json!({"NetworkID": net, "EndpointID": docker_id(n)});
    // A bad call changes nothing and says why, in Docker's shape.
    let (status, err) = call(
        &socket,
        "NetworkDriver.CreateEndpoint",
        &serde_json::json!({"NetworkID": net,
        "EndpointID": docker_id(99), "Interface": {"Address": "10.91.0.5/24"}}),
    )
    .unwrap();
    assert_eq!(status, 500);
    assert!(err["Err"].as_str().unwrap().contains("not a usable address"), "{err}");
    // How long one create takes, the data path loaded: the kills spread over it.
    let (_, first) = call(&socket, "NetworkDriver.CreateEndpoint", &endpoint(0)).unwrap();
    assert_eq!(first["Interface"]["MacAddress"], "02:42:0a:5a:00:0a", "Docker's MAC rule for the address");
    call(&socket, "NetworkDriver.DeleteEndpoint", &delete(0)).unwrap();
    let t = Instant::now();
    call(&socket, "NetworkDriver.CreateEndpoint", &endpoint(0)).unwrap();
    let took = t.elapsed();
    call(&socket, "NetworkDriver.DeleteEndpoint", &delete(0)).unwrap();

    let moments = 12u32;
    let (mut kept, mut rolled_back, mut mid_call) = (0, 0, 0);
    for k in 1..=moments {
        let sock = socket.clone();
        let body = endpoint(k);
        let caller = std::thread::spawn(move || call(&sock, "NetworkDriver.CreateEndpoint", &body));
        std::thread::sleep(took * k / moments);
        plugin.kill();
        let _ = caller.join().unwrap();
        // An intent left behind means the kill landed between the call's
        // first kernel change and its save: the case this test is about.
        if lab.roots.intent_file().exists() {
            mid_call += 1;
        }
        plugin = Plugin::start(&lab, &dir).expect("restarting the plugin");
        // What the kernel holds matches the record: all of it or nothing.
        let name = format!("docker-{}", &docker_id(k)[..12]);
        let recorded =
            serde_json::from_slice::<Value>(&std::fs::read(lab.roots.state_file()).unwrap()).unwrap()["sandboxes"]
                .get(&name)
                .is_some();
        let links = lab.in_host(|r| r.link_names()).unwrap();
        let veth = format!("veth{}", &docker_id(k)[..7]);
        let ip = Ipv4Addr::new(10, 90, 0, 10 + k as u8);
        let in_map =
            lab.datapath().endpoints().unwrap().get(&netpath_common::EndpointKey { ipv4: ip.octets() }, 0).is_ok();
        assert_eq!(
            (links.contains(&veth), in_map),
            (recorded, recorded),
            "kill {k}: record {recorded}, link, map entry"
        );
        assert!(!links.iter().any(|l| l.starts_with("vnp") && !recorded), "kill {k}: a sandbox end left: {links:?}");
        if recorded {
            kept += 1
        } else {
            rolled_back += 1
        }
        // Docker's retry, then its cleanup: both work from either outcome.
        assert_eq!(call(&socket, "NetworkDriver.CreateEndpoint", &endpoint(k)).unwrap().0, 200);
        assert_eq!(call(&socket, "NetworkDriver.DeleteEndpoint", &delete(k)).unwrap().0, 200);
    }
    eprintln!(
        "{moments} kills: {mid_call} in the middle of a create, {kept} creates complete, {rolled_back} rolled back"
    );
    assert!(mid_call > 0, "no kill landed in the middle of a create ({kept} complete, {rolled_back} rolled back)");
    assert_eq!(call(&socket, "NetworkDriver.DeleteNetwork", &serde_json::json!({"NetworkID": net})).unwrap().0, 200);
    let check = lab.netpath_ok(&["system", "check"]).unwrap();
    assert!(check.trim().is_empty(), "nothing left to repair: {check}");
    assert!(lab.datapath().endpoints().unwrap().keys().next().is_none(), "no endpoint entry left");
    let rules = firewall(&lab);
    for needle in ["netpath", "10.90.0."] {
        assert!(!rules.contains(needle), "the host firewall names {needle}:\n{rules}");
    }
}
