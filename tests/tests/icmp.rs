//! ICMP errors are believed only as far as they should be: a sandbox may
//! report errors only about its own connections, and from the outside only
//! errors a router may send about a translated connection get in (port
//! unreachable only from the host the connection goes to). Checked at the
//! victims' connected sockets: a believed error shows as ECONNREFUSED, a
//! refused one leaves the next datagram to arrive normally. The same frame
//! sent by the rightful party is delivered, so the frames themselves are
//! proven good.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use netpath_tests::{
    Lab, all_counters, bridge_of,
    frames::{self, Mac},
    lab, moved, sandbox_ns, words,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// A UDP socket in `ns` bound to `local` and connected to `peer`: ICMP
/// errors about its datagrams come back as errors on it.
fn connected(ns: &std::path::Path, local: &str, peer: &str) -> UdpSocket {
    let s = frames::udp_socket(ns, addr(local)).unwrap();
    s.connect(peer).unwrap();
    s
}

/// What the next receive on `sock` brings: `Ok(bytes)` or the error kind.
fn next(sock: &UdpSocket) -> Result<Vec<u8>, std::io::ErrorKind> {
    let mut buf = [0u8; 2048];
    sock.recv(&mut buf).map(|n| buf[..n].to_vec()).map_err(|e| e.kind())
}

/// Sends `frame` from `ns`'s eth0 and returns how much `reason` of
/// `program` moved.
fn send_counted(lab: &Lab, ns: &std::path::Path, frame: Vec<u8>, program: &str, reason: &str) -> u64 {
    let before = all_counters(lab);
    assert_eq!(frames::send(ns, "eth0", &[frame]).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(50));
    let m = moved(&before, &all_counters(lab));
    m.iter().find(|((p, r), _)| *p == program && *r == reason).map(|(_, n)| *n).unwrap_or(0)
}

fn mac(ns: &std::path::Path, dev: &str) -> Mac {
    frames::mac_of(ns, dev).unwrap()
}

#[test]
fn a_sandbox_reports_errors_only_about_its_own_connections() {
    let lab = lab("icmp-own");
    lab.netpath_ok(&words("network create n1 --subnet 10.74.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name web --network n1 --ip 10.74.0.10 -p 8080:7000/udp")).unwrap();
    lab.netpath_ok(&words("run -d --name x --network n1 --ip 10.74.0.30")).unwrap();
    let (web_ns, x_ns) = (sandbox_ns(&lab, "web"), sandbox_ns(&lab, "x"));
    let gw = mac(&lab.host_ns, &bridge_of(&lab, "n1").unwrap());
    let web = frames::udp_socket(&web_ns, addr("0.0.0.0:7000")).unwrap();
    let client = connected(&lab.outside_ns, "198.18.0.1:40000", "198.18.0.2:8080");
    client.send(b"hello").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = web.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.to_string().as_str()), (&b"hello"[..], "198.18.0.1:40000"));

    // The error web's stack would send about that datagram, as web received it.
    let quoted = frames::udp_packet(addr("198.18.0.1:40000"), addr("10.74.0.10:7000"), b"hello");
    let error = |src: Ipv4Addr, src_mac: Mac| {
        frames::icmp_error(gw, src_mac, src, OUTSIDE, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, &quoted)
    };
    // Forged by x: dropped, and the client's socket never hears of it.
    let forged = error(Ipv4Addr::new(10, 74, 0, 30), mac(&x_ns, "eth0"));
    assert_eq!(send_counted(&lab, &x_ns, forged, "to_uplink", "DROP_ICMP_ERROR_NOT_OWN"), 1);
    web.send_to(b"still here", from).unwrap();
    assert_eq!(next(&client), Ok(b"still here".to_vec()), "the forged error did not reach the client");
    // Sent by web itself: translated, and the client sees the refusal.
    let own = error(Ipv4Addr::new(10, 74, 0, 10), mac(&web_ns, "eth0"));
    assert_eq!(send_counted(&lab, &web_ns, own, "to_uplink", "ICMP_ERROR_TRANSLATED"), 1);
    assert_eq!(next(&client), Err(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn errors_from_outside_must_be_plausible() {
    let lab = lab("icmp-out");
    lab.netpath_ok(&words("network create n1 --subnet 10.75.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name a --network n1 --ip 10.75.0.10")).unwrap();
    let a_ns = sandbox_ns(&lab, "a");
    let (outside_mac, uplink_mac) = (mac(&lab.outside_ns, "eth0"), mac(&lab.host_ns, "uplink0"));
    let far = frames::udp_socket(&lab.outside_ns, addr("198.18.0.1:6000")).unwrap();
    let a = connected(&a_ns, "10.75.0.10:5001", "198.18.0.1:6000");
    a.send(b"hi").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = far.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.to_string().as_str()), (&b"hi"[..], "198.18.0.2:5001"), "masqueraded, port kept");

    // Errors about that datagram as it crossed the wire.
    let quoted = frames::udp_packet(addr("198.18.0.2:5001"), addr("198.18.0.1:6000"), b"hi");
    let error = |src: Ipv4Addr, icmp_type: u8, code: u8| {
        frames::icmp_error(uplink_mac, outside_mac, src, HOST, icmp_type, code, &quoted)
    };
    let implausible = [
        // A parameter problem: no router reports one about another's packet.
        error(OUTSIDE, ICMP_PARAMETER_PROBLEM, 0),
        // Port unreachable from a host the datagram did not go to.
        error(Ipv4Addr::new(198, 18, 0, 77), ICMP_DEST_UNREACH, ICMP_PORT_UNREACH),
    ];
    for f in implausible {
        assert_eq!(send_counted(&lab, &lab.outside_ns, f, "from_uplink", "DROP_ICMP_ERROR_IMPLAUSIBLE"), 1);
    }
    far.send_to(b"still here", from).unwrap();
    assert_eq!(next(&a), Ok(b"still here".to_vec()), "no implausible error reached the sandbox");
    // Port unreachable from the destination itself: believed.
    let real = error(OUTSIDE, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH);
    assert_eq!(send_counted(&lab, &lab.outside_ns, real, "from_uplink", "ICMP_ERROR_TRANSLATED"), 1);
    assert_eq!(next(&a), Err(std::io::ErrorKind::ConnectionRefused));
}
