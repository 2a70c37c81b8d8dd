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

fn cluster_lab(tag: &str, hosts: usize) -> MultiHost {
    let mut mh = MultiHost::create(tag, hosts, &netpath_tests::bins()).expect("building the multi-host lab");
    mh.start_etcd().expect("starting etcd in the lab");
    mh.configure_cluster(&serde_json::json!({})).unwrap();
    mh
}

/// Waits (bounded) until each host's agent has programmed the other
/// hosts' sandboxes `eps` (host index, address) into its data path.
fn await_agents(mh: &MultiHost, vni: u32, eps: &[(usize, Ipv4Addr)]) {
    for (i, h) in mh.hosts.iter().enumerate() {
        let want: Vec<_> = eps
            .iter()
            .filter(|(at, _)| *at != i)
            .map(|(_, ip)| netpath_common::RemoteEndpointKey::ipv4(vni, ip.octets()))
            .collect();
        let mut have = Vec::new();
        for _ in 0..100 {
            have = h.datapath().remote_endpoints().unwrap().keys().filter_map(|k| k.ok()).collect();
            if want.iter().all(|k| have.contains(k)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(want.iter().all(|k| have.contains(k)), "host {i}'s agent programmed {have:?}, want {want:?}");
    }
}

/// (address, MAC) of sandbox `name` on host `i`, from its state.
fn endpoint_on(mh: &MultiHost, i: usize, name: &str) -> (Ipv4Addr, [u8; 6]) {
    let (_store, state) = Store::open(&mh.host(i).roots).unwrap();
    let att = &state.sandboxes[name].attachments[0];
    (att.ip, att.mac)
}

fn host_counters(mh: &MultiHost, i: usize) -> Vec<(netpath_common::Program, netpath_common::Counters)> {
    let dp = mh.host(i).datapath();
    netpath_common::Program::ALL.iter().map(|&p| (p, dp.counters(p).unwrap())).collect()
}

fn host_out(mh: &MultiHost, i: usize, argv: &[&str]) -> String {
    let (code, out, err) = output(mh.host(i).cmd(argv[0]).unwrap().args(&argv[1..])).unwrap();
    assert_eq!(code, 0, "{argv:?} on host {i}: {err}");
    out
}

#[test]
fn three_hosts_through_the_store() {
    let mut mh = cluster_lab("ov3", 3);
    let h = |i: usize| mh.host(i);
    h(0).netpath_ok(&words("network create -d overlay --subnet 10.0.9.0/24 ov")).unwrap();
    // Visible on the others, as global.
    for i in 1..3 {
        let ls = h(i).netpath_ok(&["network", "ls"]).unwrap();
        let row = ls.lines().find(|l| l.contains(" ov ")).unwrap_or_else(|| panic!("host {i}: {ls}"));
        assert!(row.contains("overlay") && row.trim_end().ends_with("global"), "{row}");
    }
    let doc: Value = serde_json::from_str(&h(2).netpath_ok(&["network", "inspect", "ov"]).unwrap()).unwrap();
    let vni: u32 = doc[0]["Options"][overlay::OPT_VNI].as_str().unwrap().parse().unwrap();
    // A name taken anywhere is refused everywhere.
    let (code, _, err) =
        output(&mut h(1).netpath(&words("network create -d overlay --subnet 10.0.19.0/24 ov")).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("ov"), "{err}");

    let names = ["s0", "s1", "s2"];
    for (i, name) in names.iter().enumerate() {
        h(i).netpath_ok(&["run", "-d", "--name", name, "--network", "ov"]).unwrap();
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
