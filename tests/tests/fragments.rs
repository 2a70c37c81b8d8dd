//! IPv4 fragments through NAT: datagrams of 3,000 and 9,000 bytes (three and
//! seven fragments on a 1,500-byte wire) to a published port and back, and
//! from a masqueraded sandbox and back, arrive whole and intact; nothing
//! leaves the uplink with a sandbox's address (a capture on the outside's
//! wire); a fragment whose first piece was never seen is dropped.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use netpath_tests::{
    Lab, all_counters, bridge_of,
    frames::{self, Capture},
    lab, moved, sandbox_ns, words,
};

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// Deterministic payload of `len` bytes, different per `seed`.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed).collect()
}

fn socket(ns: &std::path::Path, a: &str) -> UdpSocket {
    frames::udp_socket(ns, addr(a)).unwrap()
}

/// Receives one datagram: (source, bytes).
fn recv(sock: &UdpSocket) -> (SocketAddrV4, Vec<u8>) {
    let mut buf = vec![0u8; 65536];
    let (n, from) = sock.recv_from(&mut buf).expect("a datagram that must arrive");
    let std::net::SocketAddr::V4(from) = from else { panic!("IPv6 source") };
    (from, buf[..n].to_vec())
}

fn get(lab: &Lab, before: &[(netpath_common::Program, netpath_common::Counters)], program: &str, reason: &str) -> u64 {
    let m = moved(before, &all_counters(lab));
    m.iter().find(|((p, r), _)| *p == program && *r == reason).map(|(_, n)| *n).unwrap_or(0)
}

#[test]
fn large_datagrams_cross_the_nat_whole() {
    let lab = lab("frags");
    lab.netpath_ok(&words("network create n1 --subnet 10.73.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name web --network n1 --ip 10.73.0.10 -p 9000:9000/udp")).unwrap();
    lab.netpath_ok(&words("run -d --name a --network n1 --ip 10.73.0.20")).unwrap();
    let wire = Capture::open(&lab.outside_ns, "eth0").unwrap();
    let web = socket(&sandbox_ns(&lab, "web"), "0.0.0.0:9000");
    let a = socket(&sandbox_ns(&lab, "a"), "10.73.0.20:5000");
    let client = socket(&lab.outside_ns, "198.18.0.1:6000");
    let before = all_counters(&lab);
    for (i, size) in [3000usize, 9000].into_iter().enumerate() {
        let seed = i as u8 * 4;
        // To the published port, and the sandbox's answer back.
        let question = payload(size, seed);
        client.send_to(&question, "198.18.0.2:9000").unwrap();
        assert_eq!(recv(&web), (addr("198.18.0.1:6000"), question), "{size} bytes to the published port");
        let answer = payload(size, seed + 1);
        web.send_to(&answer, "198.18.0.1:6000").unwrap();
        assert_eq!(recv(&client), (addr("198.18.0.2:9000"), answer), "{size} bytes back from the published port");
        // From a masqueraded sandbox, and the outside's answer back.
        let out = payload(size, seed + 2);
        a.send_to(&out, "198.18.0.1:6000").unwrap();
        let (from, got) = recv(&client);
        assert_eq!(*from.ip(), Ipv4Addr::new(198, 18, 0, 2), "masqueraded");
        assert_eq!(got, out, "{size} bytes from the sandbox");
        let back = payload(size, seed + 3);
        client.send_to(&back, from).unwrap();
        assert_eq!(recv(&a), (addr("198.18.0.1:6000"), back), "{size} bytes back into the sandbox");
    }
    assert!(get(&lab, &before, "from_uplink", "FRAGMENT_TRANSLATED") >= 2 * (2 + 6));
    assert!(get(&lab, &before, "to_uplink", "FRAGMENT_TRANSLATED") >= 2 * (2 + 6));

    // A later piece of a datagram whose first piece never came: dropped,
    // from the outside and from a sandbox alike.
    let outside_mac = frames::mac_of(&lab.outside_ns, "eth0").unwrap();
    let uplink_mac = frames::mac_of(&lab.host_ns, "uplink0").unwrap();
    let a_mac = frames::mac_of(&sandbox_ns(&lab, "a"), "eth0").unwrap();
    let gw = frames::mac_of(&lab.host_ns, &bridge_of(&lab, "n1").unwrap()).unwrap();
    let (outside, host, a_ip) =
        (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(10, 73, 0, 20));
    let before = all_counters(&lab);
    let f = frames::later_fragment(uplink_mac, outside_mac, outside, host, 17, 0x4242, 185, &[7; 100]);
    assert_eq!(frames::send(&lab.outside_ns, "eth0", &[f]).unwrap(), 1);
    let f = frames::later_fragment(gw, a_mac, a_ip, outside, 17, 0x4343, 185, &[7; 100]);
    assert_eq!(frames::send(&sandbox_ns(&lab, "a"), "eth0", &[f]).unwrap(), 1);
    assert_eq!(get(&lab, &before, "from_uplink", "DROP_FRAG_NO_FIRST"), 1);
    assert_eq!(get(&lab, &before, "to_uplink", "DROP_FRAG_NO_FIRST"), 1);

    // On the outside's wire: fragments went by, none with a sandbox address.
    std::thread::sleep(Duration::from_millis(200));
    let seen = wire.ipv4();
    let pieces = seen.iter().filter(|p| u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0).count();
    assert!(pieces >= 4 * (3 + 7), "the datagrams crossed as fragments: {pieces}");
    let private: Vec<_> = seen
        .iter()
        .map(|p| frames::ipv4_addrs(p))
        .filter(|(s, d)| s.octets()[..2] == [10, 73] || d.octets()[..2] == [10, 73])
        .collect();
    assert!(private.is_empty(), "a sandbox address crossed the uplink: {private:?}");
}
