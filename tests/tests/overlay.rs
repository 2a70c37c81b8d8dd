//! The overlay driver's data path across hosts: VXLAN encapsulation in
//! eBPF (`bpf_skb_set_tunnel_key` to a `collect_md` device), ARP for remote
//! sandboxes answered in eBPF, checked decapsulation into the sandbox.
//!
//! `datapath_*` tests build hosts from two labs joined by an underlay link
//! and fill what the cluster store would (the shared network with its VNI,
//! each host's block, the remote endpoints) through the library, so they
//! test the data path and the driver's local side on their own.
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use netpath::{
    network::{
        overlay::{self, Shared},
        remote::{Remote, RemoteEndpoints},
    },
    state::Store,
};
use netpath_tests::{
    At, Lab, all_counters,
    frames::{self, Capture},
    lab, moved, output, probe, sandbox_ns, transfer, words,
};
use serde_json::Value;

const SUBNET: &str = "10.0.9.0/24";
const VNI: u32 = 4097;

/// Host `i` of the pair: its lab and its underlay (VTEP) address.
struct Node {
    lab: Lab,
    vtep: Ipv4Addr,
}

/// Two lab hosts joined by a veth pair `under0` (192.0.2.1 and .2/24): the
/// underlay. It goes with the labs' host namespaces.
fn two_hosts(tag: &str) -> (Node, Node) {
    let a = Node { lab: lab(&format!("{tag}a")), vtep: Ipv4Addr::new(192, 0, 2, 1) };
    let b = Node { lab: lab(&format!("{tag}b")), vtep: Ipv4Addr::new(192, 0, 2, 2) };
    let b_ns = std::fs::File::open(&b.lab.host_ns).unwrap();
    a.lab
        .in_host(|r| {
            let (near, peer) = r.add_veth("under0", "underpeer", 1500)?;
            r.move_to_netns(peer, &b_ns)?;
            r.add_address(near, a.vtep, 24)?;
            r.set_up(near)
        })
        .unwrap();
    b.lab
        .in_host(|r| {
            let idx = r.require_index("underpeer")?;
            r.rename(idx, "under0")?;
            r.add_address(idx, b.vtep, 24)?;
            r.set_up(idx)
        })
        .unwrap();
    (a, b)
}

fn shared(name: &str, id_byte: char, subnet: &str, vni: u32, block: &str, options: &[(&str, &str)]) -> Shared {
    Shared {
        name: name.into(),
        id: std::iter::repeat_n(id_byte, 64).collect(),
        subnet: subnet.parse().unwrap(),
        gateway: subnet.parse::<Ipv4Network>().unwrap().nth(1).unwrap(),
        vni,
        options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        block: block.parse().unwrap(),
    }
}

/// What the agent does on a host that learns of a shared network: the
/// local side built, the data path loaded.
fn adopt(node: &Node, net: &Shared) {
    node.lab
        .in_host(|_| {
            let host = netpath::host::Host::open(node.lab.roots.clone())?;
            let (store, mut state) = Store::open(&host.roots)?;
            netpath::network::prepare_datapath(&host, &state)?;
            overlay::adopt(&host, &store, &mut state, net)?;
            store.save(&state)
        })
        .unwrap();
}

/// (address, MAC) of sandbox `name`'s first attachment, from the state.
fn endpoint_of(lab: &Lab, name: &str) -> (Ipv4Addr, [u8; 6]) {
    let (_store, state) = Store::open(&lab.roots).unwrap();
    let att = &state.sandboxes[name].attachments[0];
    (att.ip, att.mac)
}

/// What the agent's watch gives a host: the other host's endpoints.
fn learn(node: &Node, from: &Node, vni: u32, names: &[&str]) {
    let sink = RemoteEndpoints::new(node.lab.datapath(), node.vtep);
    for name in names {
        let (ip, mac) = endpoint_of(&from.lab, name);
        sink.upsert(&Remote { vni, ip, mac, vtep: from.vtep }).unwrap();
    }
}

fn ping(lab: &Lab, from: &str, to: &str, count: u32) -> i32 {
    let (code, ..) =
        output(lab.sandbox_cmd(from, "ping").unwrap().args(["-c", &count.to_string(), "-i", "0.2", "-W", "2", to]))
            .unwrap();
    code
}

fn neighbours(lab: &Lab, name: &str) -> String {
    let (_, out, _) = output(lab.sandbox_cmd(name, "ip").unwrap().args(["neigh", "show"])).unwrap();
    out
}

#[test]
fn datapath_between_two_hosts() {
    let (a, b) = two_hosts("ovdp");
    let net = shared("ov", 'a', SUBNET, VNI, "10.0.9.0/26", &[]);
    adopt(&a, &net);
    adopt(&b, &Shared { block: "10.0.9.64/26".parse().unwrap(), ..net.clone() });
    a.lab.netpath_ok(&words("run -d --name x --network ov")).unwrap();
    b.lab.netpath_ok(&words("run -d --name y --network ov")).unwrap();
    let (xip, _) = endpoint_of(&a.lab, "x");
    let (yip, _) = endpoint_of(&b.lab, "y");
    assert!("10.0.9.0/26".parse::<Ipv4Network>().unwrap().contains(xip), "{xip} from host a's block");
    assert!("10.0.9.64/26".parse::<Ipv4Network>().unwrap().contains(yip), "{yip} from host b's block");
    learn(&a, &b, VNI, &["y"]);
    learn(&b, &a, VNI, &["x"]);

    // The network as users see it: global scope, MTU 1450 inside.
    let v: Value = serde_json::from_str(&a.lab.netpath_ok(&["network", "inspect", "ov"]).unwrap()).unwrap();
    assert_eq!(v[0]["Scope"], "global");
    assert_eq!(v[0]["Driver"], "overlay");
    let (_, link, _) = output(a.lab.sandbox_cmd("x", "ip").unwrap().args(["-o", "link", "show", "eth0"])).unwrap();
    assert!(link.contains("mtu 1450"), "{link}");

    let (ab0, bb0) = (all_counters(&a.lab), all_counters(&b.lab));
    let wire = Capture::open(&b.lab.host_ns, "under0").unwrap();
    assert_eq!(ping(&a.lab, "x", &yip.to_string(), 3), 0, "x pings y across hosts");
    // The underlay carried VXLAN: UDP to port 4789 with the network's VNI,
    // between the two VTEPs.
    let vxlan: Vec<Vec<u8>> = wire.ipv4().into_iter().filter(|p| p[9] == 17 && p[22..24] == [0x12, 0xb5]).collect();
    assert!(vxlan.len() >= 6, "3 requests and 3 replies encapsulated, saw {}", vxlan.len());
    for p in &vxlan {
        let (src, dst) = frames::ipv4_addrs(p);
        assert!((src, dst) == (a.vtep, b.vtep) || (src, dst) == (b.vtep, a.vtep), "{src} -> {dst}");
        assert_eq!(p[28] & 0x08, 0x08, "VNI flag");
        assert_eq!(u32::from_be_bytes([0, p[32], p[33], p[34]]), VNI);
    }
    let (ab1, bb1) = (all_counters(&a.lab), all_counters(&b.lab));
    let (ma, mb) = (moved(&ab0, &ab1), moved(&bb0, &bb1));
    // x asked for y's MAC once, answered by a's program from the map.
    assert_eq!(ma.get(&("from_container", "ARP_REPLIED")), Some(&1), "{ma:?}");
    assert!(ma.get(&("from_container", "ENCAPSULATED")).copied().unwrap_or(0) >= 3, "{ma:?}");
    assert!(mb.get(&("from_overlay", "DECAPSULATED")).copied().unwrap_or(0) >= 3, "{mb:?}");
    assert!(mb.get(&("from_container", "ENCAPSULATED")).copied().unwrap_or(0) >= 3, "{mb:?}");
    let (_, y_mac) = endpoint_of(&b.lab, "y");
    let neigh = neighbours(&a.lab, "x");
    assert!(
        neigh.contains(&format!("{yip} dev eth0 lladdr {}", netpath::validate::format_mac(&y_mac))),
        "x learned y's real MAC from the eBPF ARP reply: {neigh}"
    );
    // Nothing was programmed by hand: the VXLAN device has no FDB entry.
    let fdb = a
        .lab
        .in_host(|_| Ok(std::process::Command::new("bridge").args(["fdb", "show", "dev", "netpath_vxlan"]).output()?))
        .unwrap();
    assert!(String::from_utf8_lossy(&fdb.stdout).trim().is_empty(), "FDB: {}", String::from_utf8_lossy(&fdb.stdout));

    // TCP, 4 MiB both ways, payload and peer address checked at the receiver.
    let (r, _) = transfer(
        probe(&b.lab, At::Sandbox("y"), &words("tcp-sink --port 7000 --timeout 10")),
        probe(
            &a.lab,
            At::Sandbox("x"),
            &["tcp-send", "--to", &format!("{yip}:7000"), "--bytes", "4194304", "--timeout", "10"],
        ),
    )
    .unwrap();
    assert_eq!(r["bytes"], 4194304);
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{xip}:")), "y saw x's own address: {r}");
    let (r, s) = transfer(
        probe(&a.lab, At::Sandbox("x"), &words("tcp-sink --port 7001 --timeout 10")),
        probe(
            &b.lab,
            At::Sandbox("y"),
            &["tcp-send", "--to", &format!("{xip}:7001"), "--bytes", "4194304", "--timeout", "10"],
        ),
    )
    .unwrap();
    assert_eq!((r["bytes"].clone(), r["sha256"].clone()), (s["bytes"].clone(), s["sha256"].clone()));
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{yip}:")), "{r}");
    // UDP.
    let (r, _) = transfer(
        probe(&b.lab, At::Sandbox("y"), &words("udp-sink --port 7002 --count 100 --timeout 10")),
        probe(
            &a.lab,
            At::Sandbox("x"),
            &["udp-send", "--to", &format!("{yip}:7002"), "--count", "100", "--size", "1200"],
        ),
    )
    .unwrap();
    assert_eq!(r["datagrams"], 100, "{r}");
    assert!(r["peers"].to_string().contains(&xip.to_string()), "{r}");
}

/// A VXLAN datagram's payload: the header (flags: VNI valid) and the inner frame.
fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut out = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    out.extend_from_slice(inner);
    out
}

#[test]
fn datapath_isolation_and_forgery() {
    let (a, b) = two_hosts("ovdpiso");
    let net = shared("ov", 'a', SUBNET, VNI, "10.0.9.0/26", &[]);
    adopt(&a, &net);
    adopt(&b, &Shared { block: "10.0.9.64/26".parse().unwrap(), ..net.clone() });
    let icc_off = [("com.docker.network.bridge.enable_icc", "false")];
    let quiet = shared("quiet", 'c', "10.0.11.0/24", VNI + 2, "10.0.11.0/26", &icc_off);
    adopt(&a, &quiet);
    adopt(&b, &Shared { block: "10.0.11.64/26".parse().unwrap(), ..quiet.clone() });
    for (node, name, network) in [(&a, "x", "ov"), (&b, "y", "ov"), (&a, "p", "quiet"), (&b, "q", "quiet")] {
        node.lab.netpath_ok(&["run", "-d", "--name", name, "--network", network]).unwrap();
    }
    learn(&a, &b, VNI, &["y"]);
    learn(&b, &a, VNI, &["x"]);
    learn(&a, &b, VNI + 2, &["q"]);
    learn(&b, &a, VNI + 2, &["p"]);
    let ((xip, xmac), (yip, ymac)) = (endpoint_of(&a.lab, "x"), endpoint_of(&b.lab, "y"));
    let (qip, _) = endpoint_of(&b.lab, "q");
    let victim = frames::udp_socket(&sandbox_ns(&b.lab, "y"), std::net::SocketAddrV4::new(yip, 7100)).unwrap();
    let to_y = std::net::SocketAddrV4::new(yip, 7100);

    // ICC off holds across hosts: p reaches nothing of q, dropped at p's veth.
    let a0 = all_counters(&a.lab);
    assert_ne!(ping(&a.lab, "p", &qip.to_string(), 1), 0, "ICC off: p cannot ping q");
    let m = moved(&a0, &all_counters(&a.lab));
    assert!(m.get(&("from_container", "DROP_ICC")).copied().unwrap_or(0) >= 1, "{m:?}");
    assert_eq!(m.get(&("from_container", "ENCAPSULATED")), None, "{m:?}");

    // A forged source from sandbox x: dropped on x's own veth.
    let a0 = all_counters(&a.lab);
    let forged = std::net::SocketAddrV4::new("10.0.9.50".parse().unwrap(), 7100);
    let x_ns = sandbox_ns(&a.lab, "x");
    frames::send(&x_ns, "eth0", &[frames::udp(ymac, xmac, forged, to_y, b"forged-in-sandbox")]).unwrap();
    let m = moved(&a0, &all_counters(&a.lab));
    assert_eq!(m.get(&("from_container", "DROP_SPOOFED_SOURCE")), Some(&1), "{m:?}");

    // Forged VXLAN from the underlay (host a's namespace sends to b's VTEP):
    // an unknown source, a known address with the wrong MAC, an unknown VNI,
    // a destination that is not on b. Then the same socket sends one true
    // packet of x's, which must arrive: everything before it did not.
    let b0 = all_counters(&b.lab);
    let from_x = std::net::SocketAddrV4::new(xip, 7100);
    let lies = [
        vxlan(VNI, &frames::udp(ymac, [2, 0, 0, 0, 0, 0x50], forged, to_y, b"unknown source")),
        vxlan(VNI, &frames::udp(ymac, [2, 0, 0, 0, 0, 0x51], from_x, to_y, b"wrong mac")),
        vxlan(VNI + 1, &frames::udp(ymac, xmac, from_x, to_y, b"unknown vni")),
        vxlan(VNI, &frames::udp(ymac, xmac, from_x, "10.0.9.99:7100".parse().unwrap(), b"nobody")),
    ];
    let sentinel = vxlan(VNI, &frames::udp(ymac, xmac, from_x, to_y, b"true"));
    frames::in_netns(&a.lab.host_ns, || {
        let sock = std::net::UdpSocket::bind((a.vtep, 0))?;
        for lie in &lies {
            sock.send_to(lie, (b.vtep, overlay::VXLAN_PORT))?;
        }
        sock.send_to(&sentinel, (b.vtep, overlay::VXLAN_PORT))?;
        Ok(())
    })
    .unwrap();
    let got = frames::received_until(&victim, b"true").unwrap();
    assert_eq!(got, vec![(from_x, b"true".to_vec())], "only the true packet reached y");
    let m = moved(&b0, &all_counters(&b.lab));
    assert_eq!(m.get(&("from_overlay", "DROP_OVERLAY_SPOOFED_SOURCE")), Some(&2), "{m:?}");
    assert_eq!(m.get(&("from_overlay", "DROP_OVERLAY_UNKNOWN_VNI")), Some(&1), "{m:?}");
    assert_eq!(m.get(&("from_overlay", "DROP_OVERLAY_UNKNOWN_DESTINATION")), Some(&1), "{m:?}");
    assert_eq!(m.get(&("from_overlay", "DECAPSULATED")), Some(&1), "{m:?}");

    // A host that left (its endpoints removed from the map): its packets
    // are refused as coming from nobody.
    RemoteEndpoints::new(b.lab.datapath(), b.vtep).remove(VNI, xip).unwrap();
    let b0 = all_counters(&b.lab);
    assert_ne!(ping(&a.lab, "x", &yip.to_string(), 1), 0);
    let m = moved(&b0, &all_counters(&b.lab));
    assert!(m.get(&("from_overlay", "DROP_OVERLAY_SPOOFED_SOURCE")).copied().unwrap_or(0) >= 1, "{m:?}");
}

// ---------------------------------------------------------------------------
// Three hosts on one underlay switch, etcd in the lab (the cluster helper's
// fixture): the overlay driver end to end through the store.

use netpath_lab::multihost::{self, MultiHost, Where};
use netpath_tests::cluster_lab::{self, await_agents, endpoint_on, host_counters, host_out};

#[test]
fn three_hosts_through_the_store() {
    let mut mh = cluster_lab::configured("ov3", 3, &serde_json::json!({}));
    let h = |i: usize| mh.host(i);
    h(0).netpath_ok(&words("network create -d overlay --subnet 10.0.9.0/24 ov")).unwrap();
    // Visible on the others, as global.
    for i in 1..3 {
        let ls = h(i).netpath_ok(&["network", "ls"]).unwrap();
        let row = ls.lines().find(|l| l.contains(" ov ")).unwrap_or_else(|| panic!("host {i}: {ls}"));
        assert!(row.contains("overlay") && row.trim_end().ends_with("global"), "{row}");
    }
    let vni = h(2).overlay_vni("ov").unwrap();
    // A name taken anywhere is refused everywhere.
    let (code, _, err) =
        output(&mut h(1).netpath(&words("network create -d overlay --subnet 10.0.19.0/24 ov")).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("ov"), "{err}");

    let names = ["s0", "s1", "s2"];
    for (i, name) in names.iter().enumerate() {
        let alias = format!("db{i}");
        h(i).netpath_ok(&["run", "-d", "--name", name, "--network", "ov", "--network-alias", &alias]).unwrap();
    }
    let eps: Vec<(Ipv4Addr, [u8; 6])> = names.iter().enumerate().map(|(i, n)| endpoint_on(&mh, i, n)).collect();
    let distinct: std::collections::HashSet<Ipv4Addr> = eps.iter().map(|e| e.0).collect();
    assert_eq!(distinct.len(), 3, "distinct addresses: {eps:?}");
    // Nothing but each host's agent, following the store, tells the data
    // paths where the other sandboxes are.
    await_agents(&mh, vni, &eps.iter().enumerate().map(|(i, e)| (i, e.0)).collect::<Vec<_>>());

    // Ping, TCP (4 MiB, checked at the receiver, peer address too) and UDP
    // between every pair of hosts.
    // Host 2's port on the underlay switch (a bridge's own device sees only
    // what is for the bridge itself).
    let wire = Capture::open(&mh.underlay_ns, "h2").unwrap();
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        let (from, to) = (names[i], names[j]);
        let (code, ..) = output(h(i).sandbox_cmd(from, "ping").unwrap().args([
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            &eps[j].0.to_string(),
        ]))
        .unwrap();
        assert_eq!(code, 0, "{from} pings {to}");
        let (code, ..) =
            output(h(j).sandbox_cmd(to, "ping").unwrap().args(["-c", "1", "-W", "2", &eps[i].0.to_string()])).unwrap();
        assert_eq!(code, 0, "{to} pings {from}");
        let before = host_counters(&mh, j);
        let (r, s) = transfer(
            mh.probe(Where::Sandbox(j, to), &words("tcp-sink --port 7000 --timeout 10")).unwrap(),
            mh.probe(
                Where::Sandbox(i, from),
                &["tcp-send", "--to", &format!("{}:7000", eps[j].0), "--bytes", "4194304", "--timeout", "10"],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (r["bytes"].clone(), r["sha256"].clone()),
            (s["bytes"].clone(), s["sha256"].clone()),
            "{from} -> {to}"
        );
        assert_eq!(r["bytes"], 4194304);
        assert!(
            r["peer"].as_str().unwrap().starts_with(&format!("{}:", eps[i].0)),
            "{to} saw {from}'s own address: {r}"
        );
        // The receiving host's uplink took the outer headers off every
        // packet of it itself, GSO super-packets included (4 MiB is over
        // 2800 segments, packed into packets of at most 64 KiB): the VXLAN
        // device behind it decapsulated none.
        let m = moved(&before, &host_counters(&mh, j));
        assert!(m.get(&("from_uplink", "DECAPSULATED")).copied().unwrap_or(0) >= 64, "{from} -> {to}: {m:?}");
        assert_eq!(m.get(&("from_overlay", "DECAPSULATED")), None, "{from} -> {to}: {m:?}");
        assert_eq!(m.get(&("from_uplink", "PASS_OVERLAY_TO_KERNEL")), None, "{from} -> {to}: {m:?}");
        let (r, _) = transfer(
            mh.probe(Where::Sandbox(i, from), &words("udp-sink --port 7001 --count 50 --timeout 10")).unwrap(),
            mh.probe(
                Where::Sandbox(j, to),
                &["udp-send", "--to", &format!("{}:7001", eps[i].0), "--count", "50", "--size", "1000"],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r["datagrams"], 50, "UDP {to} -> {from}: {r}");
    }
    // The underlay carried it as VXLAN: UDP to 4789 with the network's VNI.
    let vxlan: Vec<Vec<u8>> = wire.ipv4().into_iter().filter(|p| p[9] == 17 && p[22..24] == [0x12, 0xb5]).collect();
    assert!(vxlan.len() >= 8, "host 2's pings, TCP and UDP with hosts 1 and 3, encapsulated: {}", vxlan.len());
    assert!(
        vxlan.iter().all(|p| u32::from_be_bytes([0, p[32], p[33], p[34]]) == vni),
        "every VXLAN packet in VNI {vni}"
    );
    // Nothing programmed by hand, and no firewall rule anywhere.
    for i in 0..3 {
        assert_eq!(
            host_out(&mh, i, &["bridge", "fdb", "show", "dev", overlay::VXLAN_DEVICE]).trim(),
            "",
            "FDB on host {i}"
        );
        assert_eq!(
            host_out(&mh, i, &["ip", "neigh", "show", "dev", overlay::VXLAN_DEVICE]).trim(),
            "",
            "neighbours on host {i}"
        );
        let rules = host_out(&mh, i, &["iptables-save"]);
        assert!(!rules.lines().any(|l| l.starts_with("-A") || l.starts_with(':')), "iptables on host {i}: {rules}");
        assert_eq!(host_out(&mh, i, &["nft", "list", "ruleset"]).trim(), "", "nft on host {i}");
    }

    // Each host masquerades its own sandboxes to the outside.
    for (i, name) in names.iter().enumerate() {
        let (r, _) = transfer(
            mh.probe(Where::Outside, &words("tcp-sink --port 7100 --timeout 10")).unwrap(),
            mh.probe(
                Where::Sandbox(i, name),
                &["tcp-send", "--to", &format!("{}:7100", multihost::OUTSIDE_IP), "--bytes", "1000", "--timeout", "5"],
            )
            .unwrap(),
        )
        .unwrap();
        assert!(
            r["peer"].as_str().unwrap().starts_with(&format!("{}:", multihost::host_ip(i))),
            "{name} leaves as host {i}: {r}"
        );
    }
    // A port published on host 2 is reached at host 2's address only: the
    // sink listens while hosts 1 and 3 are tried, so their refusal is the
    // data path's, not an absent listener's; host 2 is tried last.
    h(1).netpath_ok(&words("run -d --name web --network ov -p 8080:80")).unwrap();
    let (mut sink, mut sink_out) = netpath_lab::probes::start_sink(
        mh.probe(Where::Sandbox(1, "web"), &words("tcp-sink --port 80 --timeout 15")).unwrap(),
    )
    .unwrap();
    for i in [0, 2] {
        let (code, ..) = output(
            &mut mh
                .probe(
                    Where::Outside,
                    &["tcp-send", "--to", &format!("{}:8080", multihost::host_ip(i)), "--bytes", "1", "--timeout", "1"],
                )
                .unwrap(),
        )
        .unwrap();
        assert_ne!(code, 0, "port 8080 is not published on host {i}");
    }
    let (code, sent, err) = output(
        &mut mh
            .probe(
                Where::Outside,
                &["tcp-send", "--to", &format!("{}:8080", multihost::host_ip(1)), "--bytes", "1000", "--timeout", "5"],
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(code, 0, "host 2's published port: {sent} {err}");
    let mut received = String::new();
    std::io::Read::read_to_string(&mut sink_out, &mut received).unwrap();
    assert!(sink.wait().unwrap().success(), "sink: {received}");
    let r: serde_json::Value = serde_json::from_str(received.trim()).unwrap();
    assert_eq!(r["bytes"], 1000, "{r}");
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{}:", multihost::OUTSIDE_IP)), "{r}");

    // Another overlay network reaches nothing of this one across hosts.
    h(0).netpath_ok(&words("network create -d overlay --subnet 10.0.10.0/24 other")).unwrap();
    h(0).netpath_ok(&words("run -d --name t --network other")).unwrap();
    let (before, victim_before) = (host_counters(&mh, 0), host_counters(&mh, 2));
    let (code, ..) =
        output(h(0).sandbox_cmd("t", "ping").unwrap().args(["-c", "1", "-W", "1", &eps[2].0.to_string()])).unwrap();
    assert_ne!(code, 0, "t (other network) cannot reach s2");
    let m = moved(&before, &host_counters(&mh, 0));
    assert_eq!(m.get(&("from_container", "DROP_OTHER_NETWORK")), Some(&1), "{m:?}");
    assert_eq!(m.get(&("from_container", "ENCAPSULATED")), None, "{m:?}");
    let m = moved(&victim_before, &host_counters(&mh, 2));
    assert_eq!(m.get(&("from_overlay", "DECAPSULATED")), None, "nothing reached s2's host: {m:?}");
    assert_eq!(m.get(&("from_uplink", "DECAPSULATED")), None, "nothing reached s2's host: {m:?}");

    // Names resolve across hosts: s0's resolver (its gateway, on host 1)
    // answers the names and aliases of the sandboxes on hosts 2 and 3 with
    // their overlay addresses, from what host 1's agent learned.
    let gateway: Ipv4Addr = "10.0.9.1".parse().unwrap();
    let first = cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || {
        cluster_lab::dig(&mh, 0, "s0", "s2", gateway).1 == vec![eps[2].0]
    });
    assert!(first.is_some(), "s0 resolves s2 (host 3): {:?}", cluster_lab::dig(&mh, 0, "s0", "s2", gateway));
    for (j, name) in [(1, "s1"), (1, "db1"), (2, "s2"), (2, "db2"), (0, "db0")] {
        let (rcode, answers) = cluster_lab::dig(&mh, 0, "s0", name, gateway);
        assert_eq!(answers, vec![eps[j].0], "{name} from host 1: {rcode}");
    }
    // And the other way: host 3's resolver knows host 1's sandbox.
    assert_eq!(cluster_lab::dig(&mh, 2, "s2", "db0", gateway).1, vec![eps[0].0]);
    // A TCP transfer by name: the alias resolved by the resolver, then
    // payload and peer address checked at the receiver (s2, on host 3).
    let (_, to) = cluster_lab::dig(&mh, 0, "s0", "db2", gateway);
    let (r, s) = transfer(
        mh.probe(Where::Sandbox(2, "s2"), &words("tcp-sink --port 7200 --timeout 10")).unwrap(),
        mh.probe(
            Where::Sandbox(0, "s0"),
            &["tcp-send", "--to", &format!("{}:7200", to[0]), "--bytes", "65536", "--timeout", "10"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!((r["bytes"].clone(), r["sha256"].clone()), (s["bytes"].clone(), s["sha256"].clone()));
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{}:", eps[0].0)), "s2 saw s0: {r}");
    // Names of another overlay network (u, on host 3) and of a local
    // bridge network on another host (b, on host 2) do not resolve from
    // ov; u does from its own network's sandbox t (host 1).
    h(2).netpath_ok(&words("run -d --name u --network other")).unwrap();
    h(1).netpath_ok(&words("network create --subnet 10.0.30.0/24 loc")).unwrap();
    h(1).netpath_ok(&words("run -d --name b --network loc")).unwrap();
    let (uip, _) = endpoint_on(&mh, 2, "u");
    let other_gw: Ipv4Addr = "10.0.10.1".parse().unwrap();
    let t_sees_u =
        cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || cluster_lab::dig(&mh, 0, "t", "u", other_gw).1 == vec![uip]);
    assert!(t_sees_u.is_some(), "t resolves u on their network: {:?}", cluster_lab::dig(&mh, 0, "t", "u", other_gw));
    for name in ["u", "b"] {
        let (rcode, answers) = cluster_lab::dig(&mh, 0, "s0", name, gateway);
        assert!(answers.is_empty(), "{name} is not on ov, yet s0 got {answers:?} ({rcode})");
    }
    h(2).netpath_ok(&["rm", "-f", "u"]).unwrap();
    h(1).netpath_ok(&["rm", "-f", "b"]).unwrap();
    h(1).netpath_ok(&["network", "rm", "loc"]).unwrap();

    // network rm: refused while sandboxes use it anywhere; then gone everywhere.
    h(1).netpath_ok(&["rm", "-f", "web", "s1"]).unwrap();
    let (code, _, err) = output(&mut h(1).netpath(&["network", "rm", "ov"]).unwrap()).unwrap();
    assert_ne!(code, 0, "members on hosts 1 and 3: {err}");
    h(0).netpath_ok(&["rm", "-f", "s0", "t"]).unwrap();
    h(2).netpath_ok(&["rm", "-f", "s2"]).unwrap();
    h(1).netpath_ok(&["network", "rm", "ov"]).unwrap();
    for i in [0, 2] {
        let ls = h(i).netpath_ok(&["network", "ls"]).unwrap();
        assert!(!ls.lines().any(|l| l.contains(" ov ")), "host {i}: {ls}");
    }
    mh.teardown().unwrap();
}

/// The VXLAN packets among `captured` (UDP to the VXLAN port) sent to `vtep`.
fn vxlan_to(captured: &[Vec<u8>], vtep: Ipv4Addr) -> usize {
    captured.iter().filter(|p| p[9] == 17 && p[22..24] == [0x12, 0xb5] && frames::ipv4_addrs(p).1 == vtep).count()
}

/// Pings `to` from sandbox `from` on host `i`; the exit code.
fn ping_on(mh: &MultiHost, i: usize, from: &str, to: Ipv4Addr, count: u32) -> i32 {
    let (code, ..) = output(mh.host(i).sandbox_cmd(from, "ping").unwrap().args([
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        &to.to_string(),
    ]))
    .unwrap();
    code
}

/// Host 3 dies (every process the lab started in its namespaces killed:
/// agent, resolver, sandboxes; its lease is no longer renewed): hosts 1 and
/// 2 drop its endpoints from their data paths and resolvers within the TTL,
/// and a packet for a former host-3 address is not carried to host 3. The
/// next netpath command on host 3 (what a rebooted host runs first)
/// revives its agent: it re-joins with its block, the other hosts program
/// its sandboxes again, and traffic flows with the same addresses.
#[test]
fn a_dead_host_leaves_the_data_paths_and_comes_back() {
    // Granted 4 s (`lease::granted_ttl`), renewed every 1.3 s: a live
    // host's renewals survive a 2.6 s stall of a loaded CI machine.
    let ttl = 5;
    let mh = cluster_lab::configured("ovdead", 3, &serde_json::json!({"cluster-lease-ttl": ttl}));
    let h = |i: usize| mh.host(i);
    h(0).netpath_ok(&words("network create -d overlay --subnet 10.0.9.0/24 ov")).unwrap();
    let vni = h(0).overlay_vni("ov").unwrap();
    for (i, name) in ["s0", "s1", "s2"].iter().enumerate() {
        h(i).netpath_ok(&["run", "-d", "--name", name, "--network", "ov", "--network-alias", &format!("db{i}")])
            .unwrap();
    }
    let eps: Vec<(Ipv4Addr, [u8; 6])> =
        ["s0", "s1", "s2"].iter().enumerate().map(|(i, n)| endpoint_on(&mh, i, n)).collect();
    let all: Vec<(usize, Ipv4Addr)> = eps.iter().enumerate().map(|(i, e)| (i, e.0)).collect();
    await_agents(&mh, vni, &all);
    let gateway: Ipv4Addr = "10.0.9.1".parse().unwrap();
    assert_eq!(ping_on(&mh, 0, "s0", eps[2].0, 1), 0, "s0 reaches s2 while host 3 lives");
    assert!(
        cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || cluster_lab::dig(&mh, 0, "s0", "db2", gateway).1
            == vec![eps[2].0])
        .is_some()
    );
    let host3_id = std::fs::read_to_string(h(2).roots.state.join("cluster-host-id")).unwrap().trim().to_string();
    let block_of = |id: &str| {
        cluster_lab::on_host(&mh, 0, |c| c.blocks("ov")).unwrap().into_iter().find(|b| b.host == id).map(|b| b.block)
    };
    let block = block_of(&host3_id).expect("host 3 holds a block");

    // Host 3 dies. Only the lab's own processes live in its namespaces.
    h(2).kill_processes();
    let gone = netpath_common::RemoteEndpointKey::ipv4(vni, eps[2].0.octets());
    let took = cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || {
        (0..2).all(|i| !cluster_lab::remote_keys(&mh, i).contains(&gone))
    })
    .expect("hosts 1 and 2 drop host 3's endpoint from REMOTE_ENDPOINTS");
    eprintln!("host 3's endpoint left hosts 1 and 2's data paths {took:?} after its processes died (TTL {ttl} s)");
    // Host 2's endpoint stays where it was (if not, the agents' logs say
    // whether host 2's own lease ran out meanwhile).
    assert!(
        cluster_lab::remote_keys(&mh, 0).contains(&netpath_common::RemoteEndpointKey::ipv4(vni, eps[1].0.octets())),
        "host 1 still sends to host 2's s1; agent logs: host 1: {}; host 2: {}",
        multihost::log_tail(&h(0).roots.run.join("agent.log")),
        multihost::log_tail(&h(1).roots.run.join("agent.log")),
    );
    let records = cluster_lab::on_host(&mh, 0, |c| c.endpoints()).unwrap().0;
    assert!(!records.iter().any(|e| e.host == host3_id), "host 3's records expired: {records:?}");
    assert_eq!(block_of(&host3_id), None, "its block lease went with it");
    // The resolvers no longer answer its names.
    for (i, from) in [(0, "s0"), (1, "s1")] {
        let dropped = cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || {
            ["s2", "db2"].iter().all(|n| cluster_lab::dig(&mh, i, from, n, gateway).1.is_empty())
        });
        assert!(
            dropped.is_some(),
            "host {}'s resolver forgets s2: {:?}",
            i + 1,
            cluster_lab::dig(&mh, i, from, "s2", gateway)
        );
    }
    // A packet for s2's former address: not encapsulated on host 1, and
    // nothing for host 3 on its underlay port. s0 may still hold s2's MAC
    // (a ping), so a frame addressed to it is sent as well.
    let victim = Capture::open(&mh.underlay_ns, "h3").unwrap();
    let before = host_counters(&mh, 0);
    assert_ne!(ping_on(&mh, 0, "s0", eps[2].0, 2), 0, "s2's former address answers nothing");
    let s0_ns = h(0).roots.netns_dir().join("s0");
    let (from, to) = (std::net::SocketAddrV4::new(eps[0].0, 7300), std::net::SocketAddrV4::new(eps[2].0, 7300));
    frames::send(&s0_ns, "eth0", &[frames::udp(eps[2].1, eps[0].1, from, to, b"to a dead host")]).unwrap();
    let m = moved(&before, &host_counters(&mh, 0));
    eprintln!("host 1's verdicts for s2's former address: {m:?}");
    assert_eq!(m.get(&("from_container", "ENCAPSULATED")), None, "nothing encapsulated: {m:?}");
    assert!(
        m.get(&("from_container", "DROP_OVERLAY_NO_ENDPOINT")).copied().unwrap_or(0) >= 1,
        "dropped under its own reason: {m:?}"
    );
    assert_eq!(m.get(&("from_container", "PASS_ROUTED")), None, "nothing handed to the kernel: {m:?}");
    // Settle: anything in flight reaches the capture.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(vxlan_to(&victim.ipv4(), h(2).ip), 0, "no VXLAN reached host 3");

    // Host 3 comes back: its next command revives the agent (and resolver).
    h(2).netpath_ok(&["ps"]).unwrap();
    await_agents(&mh, vni, &all);
    assert_eq!(block_of(&host3_id), Some(block), "host 3 got its block back");
    assert_eq!(endpoint_on(&mh, 2, "s2").0, eps[2].0, "s2 kept its address");
    let wire = Capture::open(&mh.underlay_ns, "h3").unwrap();
    assert_eq!(ping_on(&mh, 0, "s0", eps[2].0, 2), 0, "s0 reaches s2 again");
    assert_eq!(ping_on(&mh, 2, "s2", eps[0].0, 1), 0, "and s2 reaches s0");
    let (r, s) = transfer(
        mh.probe(Where::Sandbox(2, "s2"), &words("tcp-sink --port 7301 --timeout 10")).unwrap(),
        mh.probe(
            Where::Sandbox(0, "s0"),
            &["tcp-send", "--to", &format!("{}:7301", eps[2].0), "--bytes", "262144", "--timeout", "10"],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!((r["bytes"].clone(), r["sha256"].clone()), (s["bytes"].clone(), s["sha256"].clone()));
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{}:", eps[0].0)), "s2 saw s0: {r}");
    assert!(vxlan_to(&wire.ipv4(), h(2).ip) >= 2, "host 3 got it through the overlay");
    assert!(
        cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || cluster_lab::dig(&mh, 0, "s0", "db2", gateway).1
            == vec![eps[2].0])
        .is_some(),
        "host 1's resolver knows s2 again"
    );

    // Host 3 dies again, and meanwhile another host takes s2's address.
    // When host 3 comes back, the first holder keeps it: host 3's agent
    // disconnects s2 from ov (said by `info`), so the address is on one
    // host only, in the store and in every data path, host 3's included.
    h(2).kill_processes();
    assert!(
        cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || {
            (0..2).all(|i| !cluster_lab::remote_keys(&mh, i).contains(&gone))
        })
        .is_some()
    );
    let holder = netpath::cluster::HostRecord { id: "holder".into(), vtep: Ipv4Addr::new(192, 168, 200, 99) };
    let taken = netpath::cluster::EndpointRecord {
        network: "ov".into(),
        vni,
        ip: eps[2].0,
        mac: [0x02, 0x42, 0, 0, 0, 0x77],
        name: "holder-web".into(),
        aliases: vec![],
        host: holder.id.clone(),
        vtep: holder.vtep,
    };
    cluster_lab::on_host(&mh, 1, |c| {
        let m = c.join(&holder, std::time::Duration::from_secs(120))?;
        c.register_endpoint(&taken, &m)
    })
    .unwrap();
    h(2).netpath_ok(&["ps"]).unwrap();
    let evicted = cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || {
        let (_store, state) = Store::open(&h(2).roots).unwrap();
        state.sandboxes["s2"].attachments.is_empty()
    });
    assert!(evicted.is_some(), "host 3's agent disconnected s2 from ov");
    let info: Value =
        serde_json::from_str(h(2).netpath_ok(&["info", "--format", "{{json .Cluster}}"]).unwrap().trim()).unwrap();
    let said = info["Evicted"].to_string();
    assert!(said.contains("s2") && said.contains("holder"), "info says why: {info}");
    let text = h(2).netpath_ok(&["info"]).unwrap();
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("Evicted: s2 on ov") && l.contains("holder")),
        "and so does plain info: {text}"
    );
    let (_, s2_links, _) = output(h(2).sandbox_cmd("s2", "ip").unwrap().args(["-o", "link"])).unwrap();
    assert!(!s2_links.contains("eth0"), "s2 has no interface on ov left: {s2_links}");
    let (records, _) = cluster_lab::on_host(&mh, 0, |c| c.endpoints()).unwrap();
    let holders: Vec<&str> = records.iter().filter(|e| e.ip == eps[2].0).map(|e| e.host.as_str()).collect();
    assert_eq!(holders, ["holder"], "one record for the address");
    let key = netpath_common::RemoteEndpointKey::ipv4(vni, eps[2].0.octets());
    for i in 0..3 {
        let programmed = cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || {
            h(i).datapath()
                .remote_endpoints()
                .unwrap()
                .get(&key, 0)
                .is_ok_and(|v| v.vtep_ipv4() == holder.vtep.octets())
        });
        assert!(programmed.is_some(), "host {}'s data path sends the address to its holder", i + 1);
    }
    let local = h(2).datapath().endpoints().unwrap().get(&netpath_common::EndpointKey { ipv4: eps[2].0.octets() }, 0);
    assert!(local.is_err(), "no local endpoint of the address left on host 3");
}

/// Two hosts each start 50 sandboxes on one overlay network through
/// `netpath run -d`, at the same time: 100 distinct addresses in the
/// store, in each host's state and in the other host's REMOTE_ENDPOINTS;
/// sampled pings cross; `rm -f` leaves no record anywhere.
#[test]
fn fifty_and_fifty_runs_at_once_on_two_hosts() {
    const EACH: usize = 50;
    let mh = cluster_lab::configured("ov50", 2, &serde_json::json!({}));
    mh.host(0).netpath_ok(&words("network create -d overlay --subnet 10.0.9.0/24 ov")).unwrap();
    let vni = mh.host(1).overlay_vni("ov").unwrap();
    let names = |i: usize| (0..EACH).map(move |n| format!("c{i}-{n}"));

    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for i in 0..2 {
            let (mh, names) = (&mh, names(i));
            scope.spawn(move || {
                for name in names {
                    mh.host(i).netpath_ok(&["run", "-d", "--name", &name, "--network", "ov"]).unwrap();
                }
            });
        }
    });
    eprintln!("{} runs on two hosts at once took {:?}", 2 * EACH, start.elapsed());

    let mut eps = Vec::new();
    for i in 0..2 {
        for name in names(i) {
            eps.push((i, endpoint_on(&mh, i, &name).0));
        }
    }
    let distinct: std::collections::HashSet<Ipv4Addr> = eps.iter().map(|e| e.1).collect();
    assert_eq!(distinct.len(), 2 * EACH, "distinct addresses in the hosts' states");
    let (records, _) = cluster_lab::on_host(&mh, 0, |c| c.endpoints()).unwrap();
    let stored: std::collections::HashSet<Ipv4Addr> =
        records.iter().filter(|e| e.network == "ov").map(|e| e.ip).collect();
    assert_eq!(records.iter().filter(|e| e.network == "ov").count(), 2 * EACH, "one record per sandbox");
    assert_eq!(stored, distinct, "the store holds exactly the hosts' addresses");
    let start = std::time::Instant::now();
    await_agents(&mh, vni, &eps);
    eprintln!("both agents had programmed the other host's {EACH} within {:?} more", start.elapsed());
    for i in 0..2 {
        let keys = cluster_lab::remote_keys(&mh, i);
        assert_eq!(keys.len(), EACH, "host {i} holds exactly the other host's endpoints");
    }
    // A sample of cross-host pings, both ways.
    for n in [0, 17, 49] {
        let (to0, to1) = (endpoint_on(&mh, 0, &format!("c0-{n}")).0, endpoint_on(&mh, 1, &format!("c1-{n}")).0);
        assert_eq!(ping_on(&mh, 0, &format!("c0-{n}"), to1, 1), 0, "c0-{n} pings c1-{n}");
        assert_eq!(ping_on(&mh, 1, &format!("c1-{}", 49 - n), to0, 1), 0, "c1-{} pings c0-{n}", 49 - n);
    }

    for i in 0..2 {
        let mut argv = vec!["rm".to_string(), "-f".to_string()];
        argv.extend(names(i));
        mh.host(i).netpath_ok(&argv).unwrap();
    }
    let (records, _) = cluster_lab::on_host(&mh, 0, |c| c.endpoints()).unwrap();
    assert!(records.is_empty(), "no record left: {records:?}");
    let emptied =
        cluster_lab::wait_for(cluster_lab::AGENT_LIMIT, || (0..2).all(|i| cluster_lab::remote_keys(&mh, i).is_empty()));
    assert!(emptied.is_some(), "REMOTE_ENDPOINTS emptied: {:?}", cluster_lab::remote_keys(&mh, 0));
}
