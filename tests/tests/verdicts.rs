//! Every kernel verdict is counted under its own named reason: one kind of
//! packet at a time, hand-made and sent from the test process, and exactly
//! that reason of exactly that program moves by exactly the packets sent —
//! nothing else anywhere moves. Where a packet is delivered, the receiver's
//! socket shows it; where it is dropped, the victim's socket shows nothing.
//!
//! The lab is kept silent so the comparison can be exact: IPv6 off in the
//! host and outside namespaces (no router solicitations, no MLD), every
//! neighbour the packets need pinned (no ARP), every receiver a bound UDP
//! socket (no port unreachable).
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use netpath_tests::{
    Lab, all_counters, bridge_of,
    frames::{self, ARP_REQUEST, BROADCAST, Mac},
    ip_in, lab, moved, sandbox_ns, sysctl_in,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

struct World {
    lab: Lab,
    a: Mac,
    d: Mac,
    i: Mac,
    e: Mac,
    b: Mac,
    gw1: Mac,
    gw4: Mac,
    outside: Mac,
    uplink: Mac,
}

impl World {
    fn build() -> World {
        let lab = lab("verdicts");
        for (net, extra) in [
            ("n1", "--subnet 10.60.0.0/24"),
            ("n2", "--subnet 10.61.0.0/24"),
            ("n3", "--subnet 10.62.0.0/24 -o com.docker.network.bridge.enable_icc=false"),
            ("n4", "--subnet 10.63.0.0/24 --internal"),
        ] {
            let mut args = vec!["network", "create", net];
            args.extend(extra.split_whitespace());
            lab.netpath_ok(&args).unwrap();
        }
        for (name, net, ip, extra) in [
            ("a", "n1", "10.60.0.10", ""),
            ("b", "n1", "10.60.0.20", "-p 8080:7000/udp"),
            ("c", "n2", "10.61.0.10", ""),
            ("d", "n3", "10.62.0.10", ""),
            ("e", "n3", "10.62.0.20", ""),
            ("i", "n4", "10.63.0.10", ""),
        ] {
            let mut args = vec!["run", "-d", "--name", name, "--network", net, "--ip", ip];
            args.extend(extra.split_whitespace());
            lab.netpath_ok(&args).unwrap();
        }
        for ns in [&lab.host_ns, &lab.outside_ns] {
            sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6", "1").unwrap();
            sysctl_in(ns, "net.ipv6.conf.default.disable_ipv6", "1").unwrap();
        }
        let mac = |name: &str| frames::mac_of(&sandbox_ns(&lab, name), "eth0").unwrap();
        let (a, b, c, d, e, i) = (mac("a"), mac("b"), mac("c"), mac("d"), mac("e"), mac("i"));
        let gw1 = frames::mac_of(&lab.host_ns, &bridge_of(&lab, "n1").unwrap()).unwrap();
        let gw4 = frames::mac_of(&lab.host_ns, &bridge_of(&lab, "n4").unwrap()).unwrap();
        let outside = frames::mac_of(&lab.outside_ns, "eth0").unwrap();
        let uplink = frames::mac_of(&lab.host_ns, "uplink0").unwrap();
        let show = |m: Mac| netpath::validate::format_mac(&m);
        let pin = |ns: &std::path::Path, ip: &str, m: Mac, dev: &str| {
            ip_in(ns, &["neigh", "replace", ip, "lladdr", &show(m), "dev", dev, "nud", "permanent"]).unwrap();
        };
        pin(&lab.host_ns, "198.18.0.1", outside, "uplink0");
        pin(&lab.outside_ns, "198.18.0.2", uplink, "eth0");
        // For the host's sentinels to the victims.
        pin(&lab.host_ns, "10.61.0.10", c, &bridge_of(&lab, "n2").unwrap());
        pin(&lab.host_ns, "10.62.0.20", e, &bridge_of(&lab, "n3").unwrap());
        World { lab, a, b, d, e, i, gw1, gw4, outside, uplink }
    }

    fn sock(&self, at: &str, a: &str) -> UdpSocket {
        let ns = match at {
            "host" => self.lab.host_ns.clone(),
            "outside" => self.lab.outside_ns.clone(),
            name => sandbox_ns(&self.lab, name),
        };
        frames::udp_socket(&ns, addr(a)).unwrap()
    }

    /// Sends `frames` out of `from`'s interface and returns what moved.
    fn send(&self, from: &str, frames: &[Vec<u8>]) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
        let (ns, dev) = match from {
            "outside" => (self.lab.outside_ns.clone(), "eth0"),
            name => (sandbox_ns(&self.lab, name), "eth0"),
        };
        let before = all_counters(&self.lab);
        assert_eq!(frames::send(&ns, dev, frames).unwrap(), frames.len(), "the kernel took every frame");
        // Verdicts are counted in the sender's transmit path (veth hands the
        // frame to the peer synchronously); the next reading sees them.
        moved(&before, &all_counters(&self.lab))
    }
}

fn expect(
    pairs: &[(&'static str, &'static str, u64)],
) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
    pairs.iter().map(|&(p, r, n)| ((p, r), n)).collect()
}

/// Receives `n` datagrams on `sock`: (source, payload).
fn recv(sock: &UdpSocket, n: usize) -> Vec<(SocketAddrV4, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    (0..n)
        .map(|_| {
            let (len, from) = sock.recv_from(&mut buf).expect("a datagram that must arrive");
            let std::net::SocketAddr::V4(from) = from else { panic!("IPv6 source") };
            (from, buf[..len].to_vec())
        })
        .collect()
}

/// Sends a sentinel datagram from the lab host to `to` and returns what
/// `sock` had received before it.
fn before_sentinel(w: &World, sock: &UdpSocket, to: &str) -> Vec<(SocketAddrV4, Vec<u8>)> {
    let sentinel = b"sentinel".to_vec();
    frames::in_netns(&w.lab.host_ns, || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(&sentinel, to)?;
        Ok(())
    })
    .unwrap();
    let mut got = frames::received_until(sock, &sentinel).unwrap();
    assert_eq!(got.pop().map(|(_, p)| p), Some(sentinel), "the sentinel arrived last");
    got
}

#[test]
fn each_verdict_moves_exactly_its_reason() {
    let w = World::build();
    let a_ip = Ipv4Addr::new(10, 60, 0, 10);
    let b_sock = w.sock("b", "10.60.0.20:7000");
    let c_sock = w.sock("c", "10.61.0.10:7000");
    let e_sock = w.sock("e", "10.62.0.20:7000");
    let out_sock = w.sock("outside", "198.18.0.1:6000");
    let host_sock = w.sock("host", "198.18.0.2:6001");

    // Forwarded: same network, straight into the peer.
    let f = frames::udp(w.b, w.a, addr("10.60.0.10:5000"), addr("10.60.0.20:7000"), b"fwd");
    assert_eq!(w.send("a", &[f.clone(), f.clone(), f]), expect(&[("from_container", "FORWARDED", 3)]));
    assert!(recv(&b_sock, 3).iter().all(|(from, p)| *from == addr("10.60.0.10:5000") && p == b"fwd"));

    // Another network: dropped on the sender's veth.
    let f = frames::udp(w.gw1, w.a, addr("10.60.0.10:5000"), addr("10.61.0.10:7000"), b"other");
    assert_eq!(w.send("a", &[f.clone(), f]), expect(&[("from_container", "DROP_OTHER_NETWORK", 2)]));

    // ICC off: dropped between siblings.
    let f = frames::udp(w.e, w.d, addr("10.62.0.10:5000"), addr("10.62.0.20:7000"), b"icc");
    assert_eq!(w.send("d", &[f.clone(), f]), expect(&[("from_container", "DROP_ICC", 2)]));

    // Internal network: nothing leaves the subnet.
    let f = frames::udp(w.gw4, w.i, addr("10.63.0.10:5000"), addr("198.18.0.1:6000"), b"internal");
    assert_eq!(w.send("i", &[f.clone(), f]), expect(&[("from_container", "DROP_INTERNAL_NETWORK", 2)]));

    // Malformed IPv4, from the sandbox's own MAC.
    let bad = frames::malformed(w.gw1, w.a, a_ip, OUTSIDE);
    assert_eq!(w.send("a", &bad), expect(&[("from_container", "DROP_MALFORMED", bad.len() as u64)]));

    // Not IPv4: the sandbox's own ARP goes on to the bridge; on the uplink,
    // ARP is the kernel's.
    let who_has = frames::arp(BROADCAST, w.a, ARP_REQUEST, w.a, a_ip, [0; 6], Ipv4Addr::new(10, 60, 0, 99));
    assert_eq!(w.send("a", &[who_has]), expect(&[("from_container", "PASS_ARP", 1)]));
    let who_has =
        frames::arp(BROADCAST, w.outside, ARP_REQUEST, w.outside, OUTSIDE, [0; 6], Ipv4Addr::new(198, 18, 0, 77));
    assert_eq!(w.send("outside", &[who_has]), expect(&[("from_uplink", "PASS_NOT_IPV4", 1)]));

    // Not ours: the host's own traffic on the uplink.
    let f = frames::udp(w.uplink, w.outside, addr("198.18.0.1:40001"), addr("198.18.0.2:6001"), b"host");
    assert_eq!(w.send("outside", &[f]), expect(&[("from_uplink", "PASS_NOT_OURS", 1)]));
    assert_eq!(recv(&host_sock, 1), [(addr("198.18.0.1:40001"), b"host".to_vec())]);

    // Published: the first packet opens the connection, the next are NAT.
    let f = frames::udp(w.uplink, w.outside, addr("198.18.0.1:40000"), addr("198.18.0.2:8080"), b"pub");
    assert_eq!(w.send("outside", std::slice::from_ref(&f)), expect(&[("from_uplink", "DNAT_NEW", 1)]));
    assert_eq!(w.send("outside", &[f.clone(), f]), expect(&[("from_uplink", "NAT", 2)]));
    assert!(recv(&b_sock, 3).iter().all(|(from, p)| *from == addr("198.18.0.1:40000") && p == b"pub"));

    // Masquerade: routed to the uplink by the veth's program itself, opened
    // on the uplink's egress, then tracked.
    let f = frames::udp(w.gw1, w.a, addr("10.60.0.10:5001"), addr("198.18.0.1:6000"), b"masq");
    assert_eq!(
        w.send("a", std::slice::from_ref(&f)),
        expect(&[("from_container", "REDIRECT_UPLINK", 1), ("to_uplink", "SNAT_NEW", 1)])
    );
    assert_eq!(w.send("a", &[f]), expect(&[("from_container", "REDIRECT_UPLINK", 1), ("to_uplink", "NAT", 1)]));
    assert_eq!(recv(&out_sock, 2), vec![(addr("198.18.0.2:5001"), b"masq".to_vec()); 2], "masqueraded, port kept");

    // And the packets dropped above reached no one.
    assert_eq!(before_sentinel(&w, &c_sock, "10.61.0.10:7000"), [], "other network");
    assert_eq!(before_sentinel(&w, &e_sock, "10.62.0.20:7000"), [], "ICC off");
    assert_eq!(before_sentinel(&w, &out_sock, "198.18.0.1:6000"), [], "internal network, malformed");
    assert_eq!(before_sentinel(&w, &b_sock, "10.60.0.20:7000"), [], "nothing extra for b");
}

#[test]
fn stats_names_every_reason() {
    let w = World::build();
    let f = frames::udp(w.gw1, w.a, addr("10.60.0.10:5000"), addr("10.61.0.10:7000"), b"other");
    w.send("a", &[f]);
    let table = w.lab.netpath_ok(&["stats"]).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["from_container", "DROP_OTHER_NETWORK", "1"]),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&w.lab.netpath_ok(&["stats", "--json"]).unwrap()).unwrap();
    assert_eq!(json["from_container"]["DROP_OTHER_NETWORK"]["packets"], 1, "{json}");
    assert_eq!(json["from_container"]["DROP_OTHER_NETWORK"]["bytes"], 14 + 20 + 8 + 5, "{json}");
    for program in ["from_container", "from_uplink", "to_uplink", "socket", "xdp_from_uplink"] {
        assert_eq!(json[program].as_object().unwrap().len(), netpath_common::Reason::ALL.len(), "{program}");
    }
}

#[test]
fn xdp_verdicts_are_exact_and_share_the_tc_code() {
    let lab = lab("verdicts-xdp");
    lab.configure(r#"{"uplink-xdp":"native"}"#).unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.64.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "b", "--network", "n1", "--ip", "10.64.0.20", "-p", "8080:7000/udp"])
        .unwrap();
    for ns in [&lab.host_ns, &lab.outside_ns] {
        sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        sysctl_in(ns, "net.ipv6.conf.default.disable_ipv6", "1").unwrap();
    }
    let outside = frames::mac_of(&lab.outside_ns, "eth0").unwrap();
    let uplink = frames::mac_of(&lab.host_ns, "uplink0").unwrap();
    let b_sock = frames::udp_socket(&sandbox_ns(&lab, "b"), addr("10.64.0.20:7000")).unwrap();
    let host_sock = frames::udp_socket(&lab.host_ns, addr("198.18.0.2:6001")).unwrap();
    let send = |frames: &[Vec<u8>]| {
        let before = all_counters(&lab);
        assert_eq!(frames::send(&lab.outside_ns, "eth0", frames).unwrap(), frames.len());
        moved(&before, &all_counters(&lab))
    };

    // Published: opened and translated by XDP (the TC code's parsing,
    // conntrack and rewriting), delivered with correct checksums.
    let f = frames::udp(uplink, outside, addr("198.18.0.1:40000"), addr("198.18.0.2:8080"), b"xdp");
    assert_eq!(send(std::slice::from_ref(&f)), expect(&[("xdp_from_uplink", "DNAT_NEW", 1)]));
    assert_eq!(send(&[f.clone(), f]), expect(&[("xdp_from_uplink", "NAT", 2)]));
    assert_eq!(recv(&b_sock, 3), vec![(addr("198.18.0.1:40000"), b"xdp".to_vec()); 3]);
    // Not IPv4 and not ours: XDP passes, TC decides, each counted once.
    let who_has = frames::arp(BROADCAST, outside, ARP_REQUEST, outside, OUTSIDE, [0; 6], Ipv4Addr::new(198, 18, 0, 77));
    assert_eq!(
        send(&[who_has]),
        expect(&[("xdp_from_uplink", "PASS_NOT_IPV4", 1), ("from_uplink", "PASS_NOT_IPV4", 1)])
    );
    let f = frames::udp(uplink, outside, addr("198.18.0.1:40001"), addr("198.18.0.2:6001"), b"host");
    assert_eq!(send(&[f]), expect(&[("xdp_from_uplink", "PASS_NOT_OURS", 1), ("from_uplink", "PASS_NOT_OURS", 1)]));
    assert_eq!(recv(&host_sock, 1), [(addr("198.18.0.1:40001"), b"host".to_vec())]);
    // Malformed: left to TC, which drops it.
    let bad = frames::malformed(uplink, outside, OUTSIDE, Ipv4Addr::new(198, 18, 0, 2));
    let n = bad.len() as u64;
    assert_eq!(send(&bad), expect(&[("xdp_from_uplink", "PASS_TO_TC", n), ("from_uplink", "DROP_MALFORMED", n)]));
}
