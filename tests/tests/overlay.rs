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
use netpath_tests::{At, Lab, all_counters, lab, moved, output, probe, transfer, words};
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
    assert_eq!(ping(&a.lab, "x", &yip.to_string(), 3), 0, "x pings y across hosts");
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
