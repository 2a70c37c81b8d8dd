//! A sandbox cannot speak for anyone else: forged IPv4 sources, forged
//! source MACs and lying ARP are dropped on the sender's veth, each counted
//! under its own reason, and checked where it matters — at the victim: its
//! socket receives nothing, its neighbour table and the bridge's FDB keep
//! the truth. With ICC on and off; legitimate traffic still flows.
//!
//! Victims' neighbour entries are left updatable (stale, `locktime` 0), so
//! that without the checks these very frames would poison them.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
};

use netpath_tests::{
    Lab, all_counters, bridge_of,
    frames::{self, ARP_REPLY, ARP_REQUEST, BROADCAST, Mac},
    host_ifname, ip_in, lab, moved, output, sandbox_ns, sysctl_in,
};

type Moved = BTreeMap<(&'static str, &'static str), u64>;

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn show(m: Mac) -> String {
    netpath::validate::format_mac(&m)
}

fn from_container(reason: &'static str, n: u64) -> Moved {
    [(("from_container", reason), n)].into_iter().collect()
}

struct World {
    lab: Lab,
    macs: BTreeMap<&'static str, Mac>,
    gw1: Mac,
    gw3: Mac,
    br1: String,
    br3: String,
}

impl World {
    fn build() -> World {
        let lab = lab("spoof");
        lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.70.0.0/24"]).unwrap();
        lab.netpath_ok(&["network", "create", "n2", "--subnet", "10.71.0.0/24"]).unwrap();
        let icc_off = "com.docker.network.bridge.enable_icc=false";
        lab.netpath_ok(&["network", "create", "n3", "--subnet", "10.72.0.0/24", "-o", icc_off]).unwrap();
        let sandboxes = [
            ("a", "n1", "10.70.0.10"),
            ("b", "n1", "10.70.0.20"),
            ("x", "n1", "10.70.0.30"),
            ("c", "n2", "10.71.0.10"),
            ("d", "n3", "10.72.0.10"),
            ("e", "n3", "10.72.0.20"),
        ];
        for (name, net, addr) in sandboxes {
            lab.netpath_ok(&["run", "-d", "--name", name, "--network", net, "--ip", addr]).unwrap();
        }
        for ns in [&lab.host_ns, &lab.outside_ns] {
            sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6", "1").unwrap();
            sysctl_in(ns, "net.ipv6.conf.default.disable_ipv6", "1").unwrap();
        }
        let macs: BTreeMap<_, _> =
            sandboxes.iter().map(|(n, ..)| (*n, frames::mac_of(&sandbox_ns(&lab, n), "eth0").unwrap())).collect();
        let (br1, br2, br3) =
            (bridge_of(&lab, "n1").unwrap(), bridge_of(&lab, "n2").unwrap(), bridge_of(&lab, "n3").unwrap());
        let gw1 = frames::mac_of(&lab.host_ns, &br1).unwrap();
        let gw3 = frames::mac_of(&lab.host_ns, &br3).unwrap();
        let outside = frames::mac_of(&lab.outside_ns, "eth0").unwrap();
        let uplink = frames::mac_of(&lab.host_ns, "uplink0").unwrap();
        let neigh = |ns: &std::path::Path, addr: &str, m: Mac, dev: &str, nud: &str| {
            ip_in(ns, &["neigh", "replace", addr, "lladdr", &show(m), "dev", dev, "nud", nud]).unwrap();
        };
        // What the test's own traffic needs, pinned: no ARP of the kernel
        // moves a counter.
        neigh(&lab.host_ns, "198.18.0.1", outside, "uplink0", "permanent");
        neigh(&lab.outside_ns, "198.18.0.2", uplink, "eth0", "permanent");
        neigh(&lab.host_ns, "10.71.0.10", macs["c"], &br2, "permanent");
        neigh(&sandbox_ns(&lab, "a"), "10.70.0.1", gw1, "eth0", "permanent");
        // The victims' entries: true, and open to updates.
        for (victim, dev) in [("b", "eth0"), ("x", "eth0"), ("e", "eth0")] {
            let ns = sandbox_ns(&lab, victim);
            sysctl_in(&ns, &format!("net.ipv4.neigh.{dev}.locktime"), "0").unwrap();
            let (gw, gw_mac) = if victim == "e" { ("10.72.0.1", gw3) } else { ("10.70.0.1", gw1) };
            neigh(&ns, gw, gw_mac, dev, "stale");
        }
        neigh(&sandbox_ns(&lab, "x"), "10.70.0.20", macs["b"], "eth0", "stale");
        for (br, addr, who) in [(&br1, "10.70.0.20", "b"), (&br1, "10.70.0.30", "x"), (&br3, "10.72.0.20", "e")] {
            sysctl_in(&lab.host_ns, &format!("net.ipv4.neigh.{br}.locktime"), "0").unwrap();
            neigh(&lab.host_ns, addr, macs[who], br, "stale");
        }
        let w = World { lab, macs, gw1, gw3, br1, br3 };
        // The bridge learns where the victims' MACs live from their own
        // (legitimate) ARP.
        for (who, me, other) in [("b", "10.70.0.20", "10.70.0.99"), ("e", "10.72.0.20", "10.72.0.99")] {
            let m = w.mac(who);
            let f = frames::arp(BROADCAST, m, ARP_REQUEST, m, ip(me), [0; 6], ip(other));
            assert_eq!(w.send(who, &[f]), from_container("PASS_ARP", 1));
        }
        w
    }

    fn mac(&self, who: &str) -> Mac {
        self.macs[who]
    }

    fn ns(&self, at: &str) -> PathBuf {
        match at {
            "host" => self.lab.host_ns.clone(),
            "outside" => self.lab.outside_ns.clone(),
            name => sandbox_ns(&self.lab, name),
        }
    }

    fn sock(&self, at: &str, a: &str) -> UdpSocket {
        frames::udp_socket(&self.ns(at), addr(a)).unwrap()
    }

    /// Sends `frames` out of sandbox `from`'s eth0; what moved.
    fn send(&self, from: &str, frames: &[Vec<u8>]) -> Moved {
        let before = all_counters(&self.lab);
        assert_eq!(frames::send(&self.ns(from), "eth0", frames).unwrap(), frames.len());
        moved(&before, &all_counters(&self.lab))
    }

    /// `who`'s neighbour entry for `addr`: its MAC.
    fn neighbour(&self, who: &str, addr: &str, dev: &str) -> String {
        let out = ip_in(&self.ns(who), &["-j", "neigh", "show", addr, "dev", dev]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["lladdr"].as_str().unwrap_or("none").to_string()
    }

    /// The bridge port the FDB of `br` has learned `mac` on.
    fn fdb_port(&self, br: &str, mac: Mac) -> String {
        let (code, dump, err) =
            output(self.lab.host_cmd("bridge").unwrap().args(["-j", "fdb", "show", "br", br])).unwrap();
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
        let entries = v.as_array().unwrap();
        let hits: Vec<_> = entries.iter().filter(|e| e["mac"] == show(mac) && e["vlan"].is_null()).collect();
        assert_eq!(hits.len(), 1, "one FDB entry for {}: {dump}", show(mac));
        hits[0]["ifname"].as_str().unwrap().to_string()
    }

    /// Sends a sentinel from the lab host to `to` and returns what `sock`
    /// had received before it.
    fn before_sentinel(&self, sock: &UdpSocket, to: &str) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let sentinel = b"sentinel".to_vec();
        frames::in_netns(&self.lab.host_ns, || Ok(UdpSocket::bind("0.0.0.0:0")?.send_to(&sentinel, to)?)).unwrap();
        let mut got = frames::received_until(sock, &sentinel).unwrap();
        assert_eq!(got.pop().map(|(_, p)| p), Some(sentinel));
        got
    }

    /// The victims' view of the truth, to compare before and after.
    fn truth(&self) -> Vec<String> {
        vec![
            self.neighbour("b", "10.70.0.1", "eth0"),
            self.neighbour("x", "10.70.0.1", "eth0"),
            self.neighbour("x", "10.70.0.20", "eth0"),
            self.neighbour("e", "10.72.0.1", "eth0"),
            self.neighbour("host", "10.70.0.20", &self.br1),
            self.neighbour("host", "10.70.0.30", &self.br1),
            self.neighbour("host", "10.72.0.20", &self.br3),
            self.fdb_port(&self.br1, self.mac("b")),
            self.fdb_port(&self.br3, self.mac("e")),
        ]
    }
}

#[test]
fn forged_sources_macs_and_arp_reach_no_victim() {
    let w = World::build();
    let b_sock = w.sock("b", "10.70.0.20:7000");
    let x_sock = w.sock("x", "10.70.0.30:7000");
    let c_sock = w.sock("c", "10.71.0.10:7000");
    let e_sock = w.sock("e", "10.72.0.20:7000");
    let out_sock = w.sock("outside", "198.18.0.1:6000");
    let truth = w.truth();
    assert_eq!(
        truth,
        [
            show(w.gw1),
            show(w.gw1),
            show(w.mac("b")),
            show(w.gw3),
            show(w.mac("b")),
            show(w.mac("x")),
            show(w.mac("e")),
            host_ifname(&w.lab, "b").unwrap(),
            host_ifname(&w.lab, "e").unwrap(),
        ],
        "the victims start from the truth"
    );
    let (a, d) = (w.mac("a"), w.mac("d"));

    // Forged IPv4 sources, ICC on (a) and off (d): another network's
    // address, a sibling's, an arbitrary one; to a sandbox of the other
    // network, a sibling and the outside.
    for (from, mac, gw, src, dst) in [
        ("a", a, w.gw1, "10.71.0.99:5000", "10.71.0.10:7000"),
        ("a", a, w.gw1, "10.70.0.20:5000", "198.18.0.1:6000"),
        ("a", a, w.mac("x"), "10.70.0.20:5000", "10.70.0.30:7000"),
        ("a", a, w.gw1, "203.0.113.9:5000", "198.18.0.1:6000"),
        ("a", a, w.mac("b"), "203.0.113.9:5000", "10.70.0.20:7000"),
        ("d", d, w.gw3, "10.72.0.20:5000", "198.18.0.1:6000"),
        ("d", d, w.mac("e"), "10.72.0.99:5000", "10.72.0.20:7000"),
    ] {
        let f = frames::udp(gw, mac, addr(src), addr(dst), b"forged source");
        assert_eq!(w.send(from, &[f]), from_container("DROP_SPOOFED_SOURCE", 1), "{from}: {src} -> {dst}");
    }
    assert!(w.lab.datapath().conntrack_entries().unwrap().is_empty(), "no connection was opened for a forger");

    // The same with the sandbox's own stack: an address added to eth0.
    ip_in(&w.ns("a"), &["addr", "add", "10.71.0.50/32", "dev", "eth0"]).unwrap();
    let before = all_counters(&w.lab);
    frames::in_netns(&w.ns("a"), || Ok(UdpSocket::bind("10.71.0.50:0")?.send_to(b"own stack", "10.71.0.10:7000")?))
        .unwrap();
    assert_eq!(moved(&before, &all_counters(&w.lab)), from_container("DROP_SPOOFED_SOURCE", 1));
    ip_in(&w.ns("a"), &["addr", "del", "10.71.0.50/32", "dev", "eth0"]).unwrap();

    // Forged source MACs (the sender's own address): unicast to a sibling,
    // and broadcast, which the bridge would learn from.
    for (from, own, victim_mac, dst) in [
        ("a", "10.70.0.10:5000", w.mac("x"), "10.70.0.30:7000"),
        ("a", "10.70.0.10:5000", BROADCAST, "10.70.0.30:7000"),
        ("d", "10.72.0.10:5000", BROADCAST, "10.72.0.20:7000"),
    ] {
        let forged = if from == "a" { w.mac("b") } else { w.mac("e") };
        let f = frames::udp(victim_mac, forged, addr(own), addr(dst), b"forged mac");
        assert_eq!(w.send(from, &[f]), from_container("DROP_SPOOFED_MAC", 1), "{from} as {}", show(forged));
    }
    // ... ARP carrying another's MAC in the Ethernet header, and the
    // sandbox's own stack on a borrowed MAC.
    let f = frames::arp(BROADCAST, w.mac("b"), ARP_REQUEST, w.mac("b"), ip("10.70.0.20"), [0; 6], ip("10.70.0.99"));
    assert_eq!(w.send("a", &[f]), from_container("DROP_SPOOFED_MAC", 1));
    ip_in(&w.ns("a"), &["link", "set", "dev", "eth0", "address", &show(w.mac("b"))]).unwrap();
    let before = all_counters(&w.lab);
    frames::in_netns(&w.ns("a"), || Ok(UdpSocket::bind("10.70.0.10:0")?.send_to(b"own stack", "198.18.0.1:6000")?))
        .unwrap();
    assert_eq!(moved(&before, &all_counters(&w.lab)), from_container("DROP_SPOOFED_MAC", 1));
    ip_in(&w.ns("a"), &["link", "set", "dev", "eth0", "address", &show(a)]).unwrap();

    // Lying ARP: replies claiming the gateway (to b; on the ICC-off network
    // to e), a sibling (to the host and to x), the host's own address
    // (gratuitous, to everyone).
    let lies = [
        ("a", frames::arp(w.mac("b"), a, ARP_REPLY, a, ip("10.70.0.1"), w.mac("b"), ip("10.70.0.20"))),
        ("d", frames::arp(w.mac("e"), d, ARP_REPLY, d, ip("10.72.0.1"), w.mac("e"), ip("10.72.0.20"))),
        ("a", frames::arp(BROADCAST, a, ARP_REPLY, a, ip("10.70.0.20"), BROADCAST, ip("10.70.0.20"))),
        ("a", frames::arp(w.gw1, a, ARP_REPLY, a, ip("10.70.0.30"), w.gw1, ip("10.70.0.1"))),
        ("a", frames::arp(BROADCAST, a, ARP_REQUEST, a, ip("10.70.0.1"), [0; 6], ip("10.70.0.1"))),
        ("d", frames::arp(BROADCAST, d, ARP_REQUEST, d, ip("10.72.0.1"), [0; 6], ip("10.72.0.1"))),
        // Right sender address, someone else's MAC inside the ARP.
        ("a", frames::arp(BROADCAST, a, ARP_REPLY, w.mac("b"), ip("10.70.0.10"), BROADCAST, ip("10.70.0.20"))),
    ];
    for (from, f) in &lies {
        assert_eq!(w.send(from, std::slice::from_ref(f)), from_container("DROP_SPOOFED_ARP", 1), "{from}");
    }

    // IPv6 (no network has it) and other protocols do not leave either.
    assert_eq!(w.send("a", &[frames::ipv6(a)]), from_container("DROP_NO_IPV6", 1));
    let other = frames::ethernet(BROADCAST, a, 0x88b5, &[0; 46]);
    assert_eq!(w.send("a", &[other]), from_container("DROP_UNKNOWN_L3", 1));

    // At the victims: nothing was learned, nothing arrived.
    assert_eq!(w.truth(), truth, "neighbour tables and the FDB unchanged");
    for (sock, to) in [
        (&b_sock, "10.70.0.20:7000"),
        (&x_sock, "10.70.0.30:7000"),
        (&c_sock, "10.71.0.10:7000"),
        (&e_sock, "10.72.0.20:7000"),
        (&out_sock, "198.18.0.1:6000"),
    ] {
        assert_eq!(w.before_sentinel(sock, to), [], "{to} received forged traffic");
    }

    // Legitimate traffic is unaffected: the sandbox's own ARP (an address
    // probe from 0.0.0.0 included), its own packets to a sibling and out.
    let probe = frames::arp(BROADCAST, a, ARP_REQUEST, a, Ipv4Addr::UNSPECIFIED, [0; 6], ip("10.70.0.10"));
    assert_eq!(w.send("a", &[probe]), from_container("PASS_ARP", 1));
    let f = frames::udp(w.mac("b"), a, addr("10.70.0.10:5000"), addr("10.70.0.20:7000"), b"legit");
    assert_eq!(w.send("a", &[f]), from_container("FORWARDED", 1));
    assert_eq!(w.before_sentinel(&b_sock, "10.70.0.20:7000"), [(addr("10.70.0.10:5000"), b"legit".to_vec())]);
    for (from, to) in [("a", "10.70.0.20"), ("a", "10.70.0.1"), ("d", "10.72.0.1"), ("a", "198.18.0.1")] {
        let (code, out, _) = output(w.lab.sandbox_cmd(from, "ping").unwrap().args(["-c", "1", "-W", "2", to])).unwrap();
        assert_eq!(code, 0, "{from} -> {to}: {out}");
    }
    let (code, ..) =
        output(w.lab.sandbox_cmd("d", "ping").unwrap().args(["-c", "1", "-W", "1", "10.72.0.20"])).unwrap();
    assert_ne!(code, 0, "ICC off still holds");
}
