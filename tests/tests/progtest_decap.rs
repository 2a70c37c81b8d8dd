//! `from_uplink` decapsulating VXLAN itself, on crafted frames with
//! `BPF_PROG_TEST_RUN` (see `netpath_tests::progtest`): a well-formed
//! packet of an overlay network is stripped to its inner frame and
//! redirected into the sandbox, with exactly the checks `from_overlay`
//! applies (one function, `from_overlay::deliver`); everything else is
//! either left to the kernel untouched (outer checksum, IP options,
//! fragments, other VNIs, other hosts) or dropped under its own reason.
//!
//! The program counts a decapsulated packet with the inner frame's length
//! (what it delivers), so those runs are read from the moved slots rather
//! than `Outcome::reason` (which wants the frame's own length).
use std::net::{Ipv4Addr, SocketAddrV4};

use netpath_common::{OverlayNetwork, Reason, RemoteEndpoint, RemoteEndpointKey, VXLAN_PORT, addr_family};
use netpath_tests::{
    craft::{self, ACK, Ipv4, MF, Mac, PSH, TCP, UDP},
    progtest::{Action, Outcome, Rig, STRAY_VETH, UPLINK_IP, UPLINK_MAC, mac_of, sandbox},
};

/// The overlay networks of the rig's world: network 1 (`a`, `b`) and
/// network 3 (`d`, `e`, ICC off), each with a sandbox on another host.
const VNI_1: u32 = 4242;
const VNI_3: u32 = 4343;
/// The other host's VTEP, on the uplink's subnet.
const VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
const VTEP_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x07];
/// A sandbox of network 1 on that host.
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 99);
/// A sandbox of network 3 on that host.
const REMOTE_3: Ipv4Addr = Ipv4Addr::new(10, 62, 0, 99);

fn ip(name: &str) -> Ipv4Addr {
    sandbox(name).ip
}

fn rig() -> Rig {
    let rig = Rig::new().expect("building the program rig");
    // Any device of the rig's namespace stands in for the VXLAN device: the
    // receive side never sends to it.
    let tunnel_ifindex = rig.ifindex(STRAY_VETH);
    for (net, vni) in [(1, VNI_1), (3, VNI_3)] {
        rig.dp.set_overlay_network(net, OverlayNetwork { vni, tunnel_ifindex }).unwrap();
    }
    for (vni, addr) in [(VNI_1, REMOTE), (VNI_3, REMOTE_3)] {
        let mut vtep = [0; 16];
        vtep[..4].copy_from_slice(&VTEP.octets());
        let ep = RemoteEndpoint { vtep, vtep_family: addr_family::IPV4, flags: 0, mac: mac_of(addr) };
        rig.dp.set_remote_endpoint(RemoteEndpointKey::ipv4(vni, addr.octets()), ep).unwrap();
    }
    rig
}

/// The inner frame: `src` sends `dst` a TCP segment with some payload,
/// Ethernet-addressed as the sending host's data path addresses it.
fn inner(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let (s, d) = (SocketAddrV4::new(src, 40000), SocketAddrV4::new(dst, 5201));
    craft::frame(mac_of(dst), mac_of(src), &Ipv4::new(src, dst, TCP), &craft::tcp(s, d, ACK | PSH, &[0x5a; 300]))
}

/// What the encapsulation puts around a frame.
struct Outer {
    vtep: Ipv4Addr,
    to: Ipv4Addr,
    eth_dst: Mac,
    vni: u32,
    vxlan_flags: [u8; 4],
    vni_reserved: u8,
    udp_check: u16,
    ip: Option<Ipv4>,
}

impl Outer {
    fn new(vni: u32) -> Outer {
        Outer {
            vtep: VTEP,
            to: UPLINK_IP,
            eth_dst: UPLINK_MAC,
            vni,
            vxlan_flags: [0x08, 0, 0, 0],
            vni_reserved: 0,
            udp_check: 0,
            ip: None,
        }
    }

    /// The VXLAN packet carrying `inner`, as the other host's VXLAN device
    /// sends it (no outer UDP checksum) unless told otherwise.
    fn around(&self, inner: &[u8]) -> Vec<u8> {
        let v = self.vni.to_be_bytes();
        let mut udp = Vec::new();
        udp.extend_from_slice(&51234u16.to_be_bytes());
        udp.extend_from_slice(&VXLAN_PORT.to_be_bytes());
        udp.extend_from_slice(&((8 + 8 + inner.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&self.udp_check.to_be_bytes());
        udp.extend_from_slice(&self.vxlan_flags);
        udp.extend_from_slice(&[v[1], v[2], v[3], self.vni_reserved]);
        udp.extend_from_slice(inner);
        let ip = self.ip.clone().unwrap_or_else(|| Ipv4::new(self.vtep, self.to, UDP));
        craft::frame(self.eth_dst, VTEP_MAC, &ip, &udp)
    }
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    Outer::new(vni).around(inner)
}

/// Exactly one packet counted, under `reason`, with `bytes` bytes.
fn counted(o: &Outcome, reason: Reason, bytes: usize) {
    assert_eq!(o.moved, vec![(reason as usize, 1, bytes as u64)], "{:?}", o.moved);
}

/// The common case: stripped to the inner frame, which goes into `a`
/// exactly as it was sent (its MACs already `a`'s and the remote
/// sandbox's), counted DECAPSULATED with the inner frame's length; nothing
/// tracked. An inner destination MAC that is not `a`'s (the remote host
/// resolved the neighbour otherwise) is set to `a`'s, as `to_sandbox` does
/// for `from_overlay`.
#[test]
fn vxlan_for_a_local_sandbox_is_decapsulated_and_delivered() {
    let rig = rig();
    let inside = inner(REMOTE, ip("a"));
    let o = rig.from_uplink(&vxlan(VNI_1, &inside));
    assert_eq!(o.action, Action::Redirect);
    counted(&o, Reason::Decapsulated, inside.len());
    assert_eq!(o.out, inside, "the inner frame, untouched");
    assert!(craft::ip_checksum_ok(&o.out) && craft::l4_checksum_ok(&o.out));
    assert!(o.ct_new.is_empty());

    let mut other_dst = inside.clone();
    other_dst[0..6].copy_from_slice(&[0x02, 0x42, 0xff, 0, 0, 1]);
    let o = rig.from_uplink(&vxlan(VNI_1, &other_dst));
    assert_eq!(o.action, Action::Redirect);
    counted(&o, Reason::Decapsulated, inside.len());
    assert_eq!(o.out, inside, "destination MAC set to a's, the rest as sent");

    // Ethernet padding behind a short outer datagram is not part of it.
    let small = craft::frame(
        mac_of(ip("b")),
        mac_of(REMOTE),
        &Ipv4::new(REMOTE, ip("b"), UDP),
        &craft::udp(SocketAddrV4::new(REMOTE, 53), SocketAddrV4::new(ip("b"), 53), b"q"),
    );
    let o = rig.from_uplink(&vxlan(VNI_1, &small));
    assert_eq!(o.action, Action::Redirect);
    counted(&o, Reason::Decapsulated, small.len());
    assert_eq!(o.out, small);
}

/// What `from_overlay` refuses, refused the same way on the uplink, after
/// the strip: a forged inner source (no sandbox of that VNI, another host's
/// VTEP, another MAC), a destination that is no sandbox of that network
/// here, ICC off across hosts, an inner frame that is not IPv4, an inner
/// IPv4 header that does not hold together.
#[test]
fn what_from_overlay_refuses_the_uplink_refuses() {
    let rig = rig();
    let good = inner(REMOTE, ip("a"));
    let mut cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "an unknown inner source",
            vxlan(VNI_1, &inner(Ipv4Addr::new(10, 60, 0, 98), ip("a"))),
            Reason::DropOverlaySpoofedSource,
        ),
        (
            "a remote sandbox at another VTEP",
            Outer { vtep: Ipv4Addr::new(198, 18, 0, 8), ..Outer::new(VNI_1) }.around(&good),
            Reason::DropOverlaySpoofedSource,
        ),
        (
            "the remote sandbox of another VNI",
            vxlan(VNI_1, &inner(REMOTE_3, ip("a"))),
            Reason::DropOverlaySpoofedSource,
        ),
        (
            "a sandbox of another network here",
            vxlan(VNI_1, &inner(REMOTE, ip("c"))),
            Reason::DropOverlayUnknownDestination,
        ),
        (
            "no sandbox here",
            vxlan(VNI_1, &inner(REMOTE, Ipv4Addr::new(10, 60, 0, 77))),
            Reason::DropOverlayUnknownDestination,
        ),
        (
            "the right source, the other network's VNI",
            vxlan(VNI_3, &inner(REMOTE, ip("a"))),
            Reason::DropOverlaySpoofedSource,
        ),
        ("ICC off across hosts", vxlan(VNI_3, &inner(REMOTE_3, ip("d"))), Reason::DropIcc),
    ];
    let mut forged_mac = good.clone();
    forged_mac[6..12].copy_from_slice(&[0x02, 0x42, 1, 2, 3, 4]);
    cases.push(("another inner source MAC", vxlan(VNI_1, &forged_mac), Reason::DropOverlaySpoofedSource));
    let arp = craft::arp(
        (mac_of(ip("a")), mac_of(REMOTE)),
        netpath_tests::frames::ARP_REQUEST,
        (mac_of(REMOTE), REMOTE),
        ([0; 6], ip("a")),
    );
    cases.push(("ARP inside", vxlan(VNI_1, &arp), Reason::DropOverlayNotIpv4));
    cases.push((
        "inner total length past its frame",
        vxlan(VNI_1, &craft::with_u16(good.clone(), 16, 1400)),
        Reason::DropMalformed,
    ));
    for (what, frame, reason) in cases {
        let o = rig.from_uplink(&frame);
        assert_eq!(o.action, Action::Drop, "{what}");
        counted(&o, reason, frame.len() - 50);
        assert!(o.ct_new.is_empty(), "{what}");
    }
}

/// Left to the kernel exactly as it arrived, each under its reason: an
/// outer UDP checksum (the VXLAN device verifies it), outer IP options, a
/// UDP length short of the IPv4 payload (the kernel trims), fragments (the
/// NAT path remembers first pieces for the later ones, as before), a VNI of
/// no overlay network here, another host's address or MAC.
#[test]
fn what_the_uplink_leaves_to_the_kernel() {
    let rig = rig();
    let good = inner(REMOTE, ip("a"));
    let with_ip = |f: &dyn Fn(&mut Ipv4)| {
        let mut h = Ipv4::new(VTEP, UPLINK_IP, UDP);
        f(&mut h);
        Outer { ip: Some(h), ..Outer::new(VNI_1) }.around(&good)
    };
    let mut short_udp = vxlan(VNI_1, &good);
    short_udp[38..40].copy_from_slice(&((8 + 8 + good.len() - 10) as u16).to_be_bytes());
    let first_piece = with_ip(&|h| h.frag = MF);
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "an outer UDP checksum",
            Outer { udp_check: 0x1234, ..Outer::new(VNI_1) }.around(&good),
            Reason::PassOverlayChecksum,
        ),
        ("outer IP options", with_ip(&|h| h.options = vec![1, 1, 1, 1]), Reason::PassOverlayToKernel),
        ("a UDP length short of the payload", short_udp, Reason::PassOverlayToKernel),
        ("a first fragment", first_piece, Reason::PassNotOurs),
        ("a later fragment", with_ip(&|h| h.frag = 100), Reason::PassFragment),
        ("a VNI of no overlay network here", vxlan(777, &good), Reason::PassNotOurs),
        (
            "another host's address",
            Outer { to: Ipv4Addr::new(198, 18, 0, 50), ..Outer::new(VNI_1) }.around(&good),
            Reason::PassNotOurs,
        ),
        (
            "another host's MAC",
            Outer { eth_dst: [0x02, 0, 0, 0, 0, 0x33], ..Outer::new(VNI_1) }.around(&good),
            Reason::PassNotOurs,
        ),
    ];
    for (what, frame, reason) in cases {
        let o = rig.from_uplink(&frame);
        assert_eq!(o.verdict(), (reason.name(), Action::Pass), "{what}");
        assert_eq!(o.out, frame, "{what}: untouched");
    }
    // The XDP program before it knows nothing of the overlay.
    let o = rig.xdp_from_uplink(&vxlan(VNI_1, &good));
    assert_eq!(o.verdict(), ("PASS_NOT_OURS", Action::Pass));
}

/// A VXLAN header RFC 7348 does not allow (and the kernel's device drops),
/// headers cut short and lengths that do not hold together: dropped on the
/// uplink under their own reasons, before anything is stripped.
#[test]
fn bad_vxlan_and_truncated_headers_are_dropped() {
    let rig = rig();
    let good = vxlan(VNI_1, &inner(REMOTE, ip("a")));
    for (what, flags, reserved) in [
        ("no I flag", [0, 0, 0, 0], 0),
        ("a reserved flag bit", [0x0c, 0, 0, 0], 0),
        ("reserved bits after the flags", [0x08, 0, 1, 0], 0),
        ("the reserved byte after the VNI", [0x08, 0, 0, 0], 1),
        ("GPE's next protocol", [0x0c, 0, 0, 3], 0),
    ] {
        let f =
            Outer { vxlan_flags: flags, vni_reserved: reserved, ..Outer::new(VNI_1) }.around(&inner(REMOTE, ip("a")));
        let o = rig.from_uplink(&f);
        assert_eq!(o.verdict(), ("DROP_OVERLAY_BAD_VXLAN", Action::Drop), "{what}");
    }
    // Cut before the UDP ports: the NAT path's parse, as before; after
    // them, inside UDP, VXLAN or the inner Ethernet header: nothing to
    // decapsulate.
    for len in 35..64 {
        let mut f = good[..len].to_vec();
        let total = (len - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let o = rig.from_uplink(&f);
        assert_eq!(o.verdict(), ("DROP_MALFORMED", Action::Drop), "cut at {len}");
    }
    // The outer header's checksum is fixed up after each change but one.
    let fixed = |f: Vec<u8>| {
        let mut f = craft::with_u16(f, 24, 0);
        let c = craft::checksum(&[&f[14..34]]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let inconsistent: Vec<(&str, Vec<u8>)> = vec![
        ("a broken outer header checksum", craft::with_u16(good.clone(), 24, 0x0bad)),
        ("outer total length past the frame", fixed(craft::with_u16(good.clone(), 16, good.len() as u16))),
        ("outer total length short of the headers", fixed(craft::with_u16(good.clone(), 16, 40))),
        ("UDP length past the datagram", craft::with_u16(good.clone(), 38, (good.len() - 14 - 20 + 1) as u16)),
        ("UDP length short of VXLAN and Ethernet", craft::with_u16(good.clone(), 38, 20)),
    ];
    for (what, f) in inconsistent {
        let o = rig.from_uplink(&f);
        assert_eq!(o.verdict(), ("DROP_MALFORMED", Action::Drop), "{what}");
        assert!(o.ct_new.is_empty());
    }
    // An outer header length under 20: the NAT path's parse drops it.
    for first in [0x40, 0x44] {
        let mut f = good.clone();
        f[14] = first;
        assert_eq!(rig.from_uplink(&f).verdict(), ("DROP_MALFORMED", Action::Drop), "IHL byte {first:#x}");
    }
    // Nothing above disturbed the path: the good packet still goes in.
    let o = rig.from_uplink(&good);
    assert_eq!(o.action, Action::Redirect);
}
