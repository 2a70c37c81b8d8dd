//! The property-based run of issue #9: at least 100,000 generated frames
//! through the data-path programs with `BPF_PROG_TEST_RUN` (see
//! `netpath_tests::progtest`), a fixed seed so every run feeds the same
//! frames, and after every frame the invariants below.
//!
//! A case is a short sequence of frames (conntrack emptied first), each on
//! one hook: a sandbox's veth (any of the world's, or one without a
//! sandbox), the uplink's TC ingress, XDP or TC egress. Frames are IPv4
//! (TCP, UDP, ICMP echo and errors, other protocols; options, fragment
//! bits, TTLs, every TCP flag byte), ARP, IPv6 or other ethertypes, with
//! sources and destinations drawn from the world (own, sibling, other
//! network, gateway, host, outside, unspecified, broadcast, random) and
//! some mutated (cut short, impossible IHL or version, lengths that lie,
//! broken checksums). A frame may instead continue an earlier one: the
//! reply to what a program handed on, or the next hop of a frame a
//! sandbox's veth passed to the kernel, so connections get tracked,
//! translated and answered.
//!
//! Invariants, per frame:
//! 1. the program counted exactly one reason, one packet, the frame's bytes;
//! 2. the action matches the reason (drops drop, passes pass, deliveries
//!    redirect or continue as the hook allows) and the reason is one the
//!    hook can give;
//! 3. on a sandbox veth, a frame whose IPv4 source, Ethernet source or ARP
//!    sender is not the sandbox's own is dropped and opens nothing;
//! 4. conntrack grows by whole connections only (one original and one
//!    reply entry), the original keyed by the frame's own addresses, and
//!    never for a forged source;
//! 5. frames whose Ethernet/IPv4 headers are cut short or impossible are
//!    dropped as malformed by TC and left to TC by XDP, never redirected;
//!    a transport header cut short is malformed wherever the program reads
//!    it before deciding (the veth's same-network fast path forwards
//!    without reading it, as a bridge would, and opens nothing);
//! 6. a redirected frame goes to the sandbox whose address it carries, with
//!    that sandbox's MAC, and translated frames keep valid checksums.
//!
//! Per case: the reason counters of each program moved by exactly the
//! frames fed to it, and the socket programs' by none.
use std::{
    cell::{Cell, RefCell},
    net::{Ipv4Addr, SocketAddrV4},
};

use netpath_common::{Program, Reason, ct_flags, handoff};
use netpath_tests::{
    craft::{self, ACK, ETH_P_ARP, ETH_P_IP, ICMP, Ipv4, Mac, SYN, TCP, UDP},
    progtest::{
        Action, CLIENT_IP, Hook, Outcome, PUB_RANGE, PUB_TCP, PUB_UDP, ROUTER_IP, ROUTER_MAC, Rig, RigOptions,
        SANDBOXES, STRAY_VETH, Sandbox, UPLINK, UPLINK_IP, UPLINK_MAC, gateway_mac, mac_of, net,
    },
};
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

/// Frames the run must feed at least.
const FRAMES: u64 = 100_000;
/// Cases of 1..=16 frames: about 8.5 frames each.
const CASES: u32 = 12_500;
const SEED: [u8; 32] = *b"netpath progtest: issue 9 props.";

/// One generated frame, as raw choices; `render` turns it into bytes.
#[derive(Clone, Debug)]
struct Step {
    /// Selectors: hook, veth, continue-an-earlier-frame, L3 kind, source,
    /// destination, protocol, source port, destination port, TCP flags,
    /// TTL, fragment bits, options, mutation, payload length, MACs, ARP.
    sel: [u8; 20],
    rnd_addr: u32,
    rnd: u32,
}

fn step() -> impl Strategy<Value = Step> {
    (any::<[u8; 20]>(), any::<u32>(), any::<u32>()).prop_map(|(sel, rnd_addr, rnd)| Step { sel, rnd_addr, rnd })
}

/// What a frame is, read back from its bytes.
#[derive(Clone, Debug)]
struct Fed {
    hook: Hook,
    ifindex: u32,
    /// The sandbox behind the veth (FromContainer on a sandbox's veth).
    sender: Option<&'static Sandbox>,
    frame: Vec<u8>,
    /// `skb->mark` it arrives with: what the veth handed to the uplink's
    /// egress with a packet it routed there itself.
    mark: u32,
}

struct Read {
    ethertype: u16,
    eth_src: Mac,
    /// Ethernet/IPv4 headers cut short or impossible (IPv4 frames only).
    l3_malformed: bool,
    /// A transport header the programs read, cut short (whole IPv4, not a
    /// fragment).
    l4_truncated: bool,
    fragment: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    /// Checksums valid and the packet whole: its translation must keep them.
    clean: bool,
    /// ARP sender (MAC, address), when well-formed ARP.
    arp_sender: Option<(Mac, Ipv4Addr)>,
}

fn read(f: &[u8]) -> Read {
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let eth_src: Mac = f[6..12].try_into().unwrap();
    let mut r = Read {
        ethertype,
        eth_src,
        l3_malformed: false,
        l4_truncated: false,
        fragment: false,
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        proto: 0,
        clean: false,
        arp_sender: None,
    };
    if ethertype == ETH_P_ARP && f.len() >= 42 && f[14..20] == [0, 1, 8, 0, 6, 4] {
        let sha: Mac = f[22..28].try_into().unwrap();
        r.arp_sender = Some((sha, Ipv4Addr::new(f[28], f[29], f[30], f[31])));
    }
    if ethertype != ETH_P_IP {
        return r;
    }
    if f.len() < 34 {
        r.l3_malformed = true;
        return r;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    r.l3_malformed = f[14] >> 4 != 4 || ihl < 20 || 14 + ihl > f.len();
    if r.l3_malformed {
        return r;
    }
    r.src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    r.dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    r.proto = f[23];
    r.fragment = u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0;
    let l4 = f.len() - 14 - ihl;
    let l4_type = f.get(14 + ihl).copied().unwrap_or(0);
    r.l4_truncated = !r.fragment
        && match r.proto {
            TCP => l4 < 14,
            UDP => l4 < 4,
            ICMP => l4 < 2 || (matches!(l4_type, 0 | 8) && l4 < 6),
            _ => false,
        };
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    r.clean = !r.fragment
        && !r.l4_truncated
        && total == f.len() - 14
        && craft::ip_checksum_ok(f)
        && matches!(r.proto, TCP | UDP | ICMP)
        && craft::l4_checksum_ok(f);
    r
}

/// An address of the world, picked by `sel`, from the point of view of `me`.
fn addr(sel: u8, rnd: u32, me: Option<&Sandbox>) -> Ipv4Addr {
    let own_net = me.map(|s| s.net).unwrap_or(1);
    match sel % 16 {
        0 => me.map(|s| s.ip).unwrap_or(CLIENT_IP),
        n @ 1..=6 => SANDBOXES[usize::from(n) - 1].ip,
        7 => net(own_net).gateway,
        8 => UPLINK_IP,
        9 => CLIENT_IP,
        10 => ROUTER_IP,
        11 => Ipv4Addr::UNSPECIFIED,
        12 => Ipv4Addr::BROADCAST,
        13 => {
            let g = net(own_net).gateway.octets();
            Ipv4Addr::new(g[0], g[1], g[2], 77)
        }
        14 => {
            if rnd & 1 == 0 {
                Ipv4Addr::LOCALHOST
            } else {
                Ipv4Addr::new(224, 0, 0, 1)
            }
        }
        _ => Ipv4Addr::from(rnd),
    }
}

fn port(sel: u8, rnd: u16) -> u16 {
    match sel % 8 {
        0 => PUB_TCP.0,
        1 => PUB_UDP.0,
        2 => PUB_RANGE.0 + rnd % 12,
        3 => 80,
        4 => 53,
        5 => PUB_UDP.1,
        _ => rnd,
    }
}

/// The IPv4 packet (from its header on) of an earlier frame's output, for
/// replies and ICMP quotes.
fn ipv4_of(o: &Outcome) -> Option<Vec<u8>> {
    let f = &o.out;
    (f.len() >= 42 && u16::from_be_bytes([f[12], f[13]]) == ETH_P_IP && f[14] == 0x45).then(|| f[14..].to_vec())
}

/// Turns `s` into a frame on a hook, possibly continuing `history`.
fn render(rig: &Rig, s: &Step, history: &[(Fed, Outcome)]) -> Fed {
    let [
        hook_sel,
        veth_sel,
        cont_sel,
        l3_sel,
        src_sel,
        dst_sel,
        proto_sel,
        sport_sel,
        dport_sel,
        flags,
        ttl_sel,
        frag_sel,
        opt_sel,
        mut_sel,
        len_sel,
        smac_sel,
        dmac_sel,
        arp_sel,
        quote_sel,
        icmp_sel,
    ] = s.sel;
    if cont_sel < 77 && !history.is_empty() {
        if let Some(fed) = continuation(rig, s, &history[usize::from(cont_sel) % history.len()]) {
            return fed;
        }
    }
    let hook = match hook_sel % 10 {
        0..=4 => Hook::FromContainer,
        5 | 6 => Hook::FromUplink,
        7 | 8 => Hook::ToUplink,
        _ => Hook::XdpFromUplink,
    };
    let (ifindex, sender) = if hook == Hook::FromContainer {
        match usize::from(veth_sel) % 8 {
            6 | 7 if veth_sel > 200 => (rig.ifindex(STRAY_VETH), None),
            n => (rig.veth(SANDBOXES[n % 6].name), Some(&SANDBOXES[n % 6])),
        }
    } else {
        (rig.ifindex(UPLINK), None)
    };
    // Who the frame claims to be, and where it goes: mostly what that hook
    // sees, often anything at all.
    let (src, dst) = match hook {
        Hook::FromContainer => {
            let src = if src_sel < 170 {
                sender.map(|s| s.ip).unwrap_or(SANDBOXES[0].ip)
            } else {
                addr(src_sel, s.rnd_addr, sender)
            };
            (src, addr(dst_sel, s.rnd_addr.rotate_left(7), sender))
        }
        Hook::FromUplink | Hook::XdpFromUplink => {
            let src = if src_sel < 170 {
                if src_sel & 1 == 0 { CLIENT_IP } else { Ipv4Addr::from(s.rnd_addr | 0x0100_0000) }
            } else {
                addr(src_sel, s.rnd_addr, None)
            };
            (src, if dst_sel < 170 { UPLINK_IP } else { addr(dst_sel, s.rnd_addr, None) })
        }
        Hook::ToUplink => {
            let src =
                if src_sel < 170 { SANDBOXES[usize::from(src_sel) % 6].ip } else { addr(src_sel, s.rnd_addr, None) };
            (src, if dst_sel < 170 { CLIENT_IP } else { addr(dst_sel, s.rnd_addr, None) })
        }
    };
    let own_mac = match (hook, sender) {
        (Hook::FromContainer, Some(me)) => mac_of(me.ip),
        (Hook::FromContainer, None) => mac_of(SANDBOXES[0].ip),
        (Hook::ToUplink, _) => UPLINK_MAC,
        _ => ROUTER_MAC,
    };
    let eth_src = match smac_sel {
        0..=219 => own_mac,
        220..=229 => mac_of(SANDBOXES[usize::from(smac_sel) % 6].ip),
        230..=239 => gateway_mac(1),
        240..=249 => {
            let r = s.rnd.to_be_bytes();
            [0x02, r[0], r[1], r[2], r[3], smac_sel]
        }
        _ => craft::BROADCAST,
    };
    let eth_dst = match (hook, dmac_sel % 4) {
        (Hook::FromContainer, 0) => mac_of(SANDBOXES[usize::from(dmac_sel) % 6].ip),
        (Hook::FromContainer, _) => gateway_mac(sender.map(|s| s.net).unwrap_or(1)),
        (Hook::ToUplink, _) => ROUTER_MAC,
        _ => UPLINK_MAC,
    };
    let frame = match l3_sel % 16 {
        0 => {
            let op = if arp_sel & 1 == 0 { 1 } else { 2 };
            let sha = if arp_sel < 200 { eth_src } else { mac_of(SANDBOXES[usize::from(arp_sel) % 6].ip) };
            let spa = match arp_sel % 5 {
                0 | 1 => src,
                2 => Ipv4Addr::UNSPECIFIED,
                _ => addr(arp_sel >> 2, s.rnd_addr, sender),
            };
            let mut f = craft::arp((craft::BROADCAST, eth_src), op, (sha, spa), ([0; 6], dst));
            if mut_sel % 16 == 0 {
                f.truncate(15 + usize::from(len_sel) % 27);
            } else if mut_sel % 16 == 1 {
                f[14 + usize::from(len_sel) % 6] ^= 0x40;
            }
            f
        }
        1 => netpath_tests::frames::ipv6(eth_src),
        2 => craft::ethernet(eth_dst, eth_src, s.rnd as u16, &[0x5a; 46]),
        _ => {
            // The kernel runs TC programs only on whole IPv4 headers.
            let shortest = if hook.is_xdp() { 14 } else { 34 };
            let sel = [
                proto_sel, sport_sel, dport_sel, flags, ttl_sel, frag_sel, opt_sel, mut_sel, len_sel, quote_sel,
                icmp_sel,
            ];
            ipv4_frame(s, (eth_dst, eth_src), (src, dst), history, sel, shortest)
        }
    };
    Fed { hook, ifindex, sender, frame, mark: 0 }
}

fn ipv4_frame(
    s: &Step,
    eth: (Mac, Mac),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    history: &[(Fed, Outcome)],
    sel: [u8; 11],
    shortest: usize,
) -> Vec<u8> {
    let rnd16 = (s.rnd >> 16) as u16;
    let [proto_sel, sport_sel, dport_sel, flags, ttl_sel, frag_sel, opt_sel, mut_sel, len_sel, quote_sel, icmp_sel] =
        sel;
    let payload = vec![0xa5; usize::from(len_sel) % 64];
    let (sport, dport) = (port(sport_sel, s.rnd as u16), port(dport_sel, rnd16));
    let (proto, l4) = match proto_sel % 10 {
        0..=3 => (TCP, craft::tcp(SocketAddrV4::new(src, sport), SocketAddrV4::new(dst, dport), flags, &payload)),
        4..=6 => (UDP, craft::udp(SocketAddrV4::new(src, sport), SocketAddrV4::new(dst, dport), &payload)),
        7 => (ICMP, craft::echo(proto_sel & 0x10 == 0, sport, dport)),
        8 => {
            let (kind, code) = [(3, 4), (3, 3), (3, 1), (11, 0), (12, 0), (5, 1)][usize::from(icmp_sel) % 6];
            let quoted = history
                .iter()
                .rev()
                .nth(usize::from(quote_sel) % history.len().max(1))
                .and_then(|(_, o)| ipv4_of(o))
                .unwrap_or_else(|| {
                    Ipv4::new(dst, src, UDP).build(&craft::udp(
                        SocketAddrV4::new(dst, dport),
                        SocketAddrV4::new(src, sport),
                        b"quoted",
                    ))
                });
            (ICMP, craft::icmp_error(kind, code, &quoted))
        }
        _ => (s.rnd as u8, payload.clone()),
    };
    let mut h = Ipv4::new(src, dst, proto);
    h.ttl = match ttl_sel % 8 {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 255,
        _ => 64,
    };
    h.frag = match frag_sel % 16 {
        0 => craft::MF,
        1 => craft::MF | 185,
        2 => 185,
        3 => 0,
        4 => craft::DF | craft::MF,
        _ => craft::DF,
    };
    h.options = match opt_sel % 32 {
        n @ 0..=3 => vec![1; usize::from(n) * 4],
        4 => vec![1; 40],
        5 => vec![7, 7, 4, 0, 0, 0, 0],
        _ => Vec::new(),
    };
    let mut f = craft::frame(eth.0, eth.1, &h, &l4);
    let ihl = 20 + h.options.len().div_ceil(4) * 4;
    let r = usize::from(rnd16);
    match mut_sel % 24 {
        0 => f.truncate(shortest + r % (f.len() + 1 - shortest)),
        1 => f[14] = 0x40 | (rnd16 as u8 % 5),
        2 => {
            f[14] = 0x4f;
            f.truncate(f.len().min(14 + 20 + r % 40));
        }
        3 => f[14] = (f[14] & 0x0f) | [0, 6, 5, 15][r % 4] << 4,
        4 => f = craft::with_u16(f, 16, 1500 + rnd16 % 8000),
        5 => f = craft::with_u16(f, 16, rnd16 % (ihl as u16)),
        6 => {
            let i = 14 + ihl + r % (f.len() - 14 - ihl).max(1);
            if i < f.len() {
                f[i] ^= 0x01 | (rnd16 >> 8) as u8;
            }
        }
        7 => f.truncate((14 + ihl + r % 16).min(f.len())),
        _ => {}
    }
    f
}

/// The frame that follows an earlier one: the next hop of what a sandbox's
/// veth passed to the kernel, or the answer to what a program delivered or
/// sent out.
fn continuation(rig: &Rig, s: &Step, (fed, o): &(Fed, Outcome)) -> Option<Fed> {
    let packet = ipv4_of(o)?;
    if fed.hook == Hook::FromContainer && o.action == Action::Pass {
        // Routed out of the uplink by the kernel.
        let frame = craft::ethernet(ROUTER_MAC, UPLINK_MAC, ETH_P_IP, &packet);
        return Some(Fed { hook: Hook::ToUplink, ifindex: rig.ifindex(UPLINK), sender: None, frame, mark: 0 });
    }
    if fed.hook == Hook::FromContainer && o.reason == Some(Reason::RedirectUplink) {
        // Routed out of the uplink by the veth's program: as it left it,
        // with the mark it left.
        let (ifindex, frame) = (rig.ifindex(UPLINK), o.out.clone());
        return Some(Fed { hook: Hook::ToUplink, ifindex, sender: None, frame, mark: o.mark });
    }
    let v = craft::view(&o.out);
    let (proto, flags) = (v.proto, s.sel[9] | ACK);
    let (from, to) = (SocketAddrV4::new(v.dst, v.dport), SocketAddrV4::new(v.src, v.sport));
    let l4 = match proto {
        // An answer acknowledges; it carries SYN only sometimes (SYN-ACK).
        TCP => craft::tcp(from, to, (flags & !SYN) | (flags & SYN & s.sel[10]), b"reply"),
        UDP => craft::udp(from, to, b"reply"),
        _ => return None,
    };
    let ip = Ipv4::new(v.dst, v.src, proto);
    match o.action {
        Action::Redirect => {
            // The sandbox it was delivered to answers.
            let me = SANDBOXES.iter().find(|x| x.ip == v.dst)?;
            let frame = craft::frame(gateway_mac(me.net), mac_of(me.ip), &ip, &l4);
            Some(Fed { hook: Hook::FromContainer, ifindex: rig.veth(me.name), sender: Some(me), frame, mark: 0 })
        }
        Action::Pass if fed.hook == Hook::ToUplink => {
            let hook = if s.sel[0] & 1 == 0 { Hook::FromUplink } else { Hook::XdpFromUplink };
            let frame = craft::frame(UPLINK_MAC, ROUTER_MAC, &ip, &l4);
            Some(Fed { hook, ifindex: rig.ifindex(UPLINK), sender: None, frame, mark: 0 })
        }
        _ => None,
    }
}

/// Reasons only a sandbox's veth gives, and reasons it never gives.
const VETH_ONLY: &[Reason] = &[
    Reason::Forwarded,
    Reason::PassArp,
    Reason::PassRouted,
    Reason::PassTrackedToUplink,
    Reason::RedirectUplink,
    Reason::DropSpoofedSource,
    Reason::DropSpoofedMac,
    Reason::DropSpoofedArp,
    Reason::DropNoIpv6,
    Reason::DropUnknownL3,
    Reason::DropUnknownVeth,
    Reason::DropOtherNetwork,
    Reason::DropIcc,
    Reason::DropInternalNetwork,
    Reason::DropTtlExceeded,
];
const NEVER_ON_VETH: &[Reason] = &[
    Reason::PassNotIpv4,
    Reason::PassToTc,
    Reason::SnatNew,
    Reason::PassMasqueradeOff,
    Reason::PassNoUplinkAddress,
    Reason::PassTtlExpiring,
];
const NEVER: &[Reason] = &[Reason::SocketRedirect, Reason::SocketReplyRestored];

fn allowed(hook: Hook, reason: Reason, action: Action) -> Result<(), String> {
    if NEVER.contains(&reason) {
        return Err(format!("{hook:?} counted a socket reason {}", reason.name()));
    }
    match hook {
        Hook::FromContainer if NEVER_ON_VETH.contains(&reason) => {
            return Err(format!("the veth counted {}", reason.name()));
        }
        Hook::FromContainer => {}
        _ if VETH_ONLY.contains(&reason) => return Err(format!("{hook:?} counted {}", reason.name())),
        Hook::XdpFromUplink => {}
        _ if reason == Reason::PassToTc => return Err(format!("{hook:?} counted {}", reason.name())),
        _ => {}
    }
    let class = reason as u32;
    let ok = match (class, hook) {
        (32.., _) => action == Action::Drop,
        (16..32, _) => action == Action::Pass,
        (_, Hook::FromContainer | Hook::XdpFromUplink) => action == Action::Redirect,
        (_, Hook::FromUplink) => matches!(action, Action::Redirect | Action::Pass),
        (_, Hook::ToUplink) => action == Action::Pass,
    };
    if ok { Ok(()) } else { Err(format!("{hook:?}: {} with action {action:?}", reason.name())) }
}

fn check(fed: &Fed, o: &Outcome) -> Result<(), TestCaseError> {
    let ctx = || format!("{:?} on ifindex {} frame {:02x?}", fed.hook, fed.ifindex, fed.frame);
    // 1. Exactly one reason, one packet, the frame's bytes.
    let Some(reason) = o.reason else {
        return Err(TestCaseError::fail(format!("counted {:?} for one frame: {}", o.moved, ctx())));
    };
    // 2. Action and reason agree, and the hook can give it.
    allowed(fed.hook, reason, o.action).map_err(|e| TestCaseError::fail(format!("{e}: {}", ctx())))?;
    let r = read(&fed.frame);
    // 3. Nothing leaves a sandbox under another's name.
    if fed.hook == Hook::FromContainer {
        let own = fed.sender.map(|s| (s.ip, mac_of(s.ip)));
        let forged = match own {
            None => true,
            Some((ip, mac)) => {
                r.eth_src != mac
                    || (r.ethertype == ETH_P_IP && !r.l3_malformed && r.src != ip)
                    || (r.ethertype == ETH_P_ARP
                        && r.arp_sender.is_some_and(|(sha, spa)| sha != mac || (spa != ip && !spa.is_unspecified())))
            }
        };
        if forged {
            prop_assert_eq!(o.action, Action::Drop, "forged frame not dropped ({}): {}", reason.name(), ctx());
            prop_assert!(o.ct_new.is_empty(), "forged frame opened {:?}: {}", o.ct_new, ctx());
        }
    }
    // 4. Whole connections only, keyed by the frame itself.
    if !o.ct_new.is_empty() {
        let originals: Vec<_> = o.ct_new.iter().filter(|(_, e)| e.flags & ct_flags::REPLY == 0).collect();
        let replies = o.ct_new.len() - originals.len();
        prop_assert!(originals.len() <= 1 && replies <= 1, "{} entries for one frame: {}", o.ct_new.len(), ctx());
        for (k, _) in originals {
            prop_assert_eq!(
                (Ipv4Addr::from(k.saddr), Ipv4Addr::from(k.daddr), k.proto),
                (r.src, r.dst, r.proto),
                "an entry not keyed by the frame: {}",
                ctx()
            );
            if fed.hook == Hook::FromContainer {
                prop_assert_eq!(Some(Ipv4Addr::from(k.saddr)), fed.sender.map(|s| s.ip), "{}", ctx());
            }
        }
    }
    // 5. Malformed never goes anywhere.
    if r.ethertype == ETH_P_IP && r.l3_malformed {
        let want =
            if fed.hook.is_xdp() { (Reason::PassToTc, Action::Pass) } else { (Reason::DropMalformed, Action::Drop) };
        prop_assert_eq!((reason, o.action), want, "malformed headers: {}", ctx());
    }
    if r.ethertype == ETH_P_IP && r.l4_truncated {
        prop_assert!(o.ct_new.is_empty(), "a cut transport header opened {:?}: {}", o.ct_new, ctx());
        match fed.hook {
            Hook::FromContainer => prop_assert!(
                o.action != Action::Redirect || matches!(reason, Reason::Forwarded | Reason::RedirectUplink),
                "a cut transport header was translated: {}",
                ctx()
            ),
            Hook::XdpFromUplink => prop_assert_eq!((reason, o.action), (Reason::PassToTc, Action::Pass), "{}", ctx()),
            _ => prop_assert_eq!((reason, o.action), (Reason::DropMalformed, Action::Drop), "{}", ctx()),
        }
    }
    // 6. Deliveries reach the sandbox the packet names, translations keep
    //    checksums.
    if reason == Reason::RedirectUplink {
        // Routed out of the uplink: to the router, one hop of TTL less;
        // translated only with the uplink's verdict handed over (a mark),
        // and then never from a sandbox's address unless its network does
        // not masquerade.
        let (v, before) = (craft::view(&o.out), craft::view(&fed.frame));
        prop_assert_eq!((v.eth_dst, v.eth_src), (ROUTER_MAC, UPLINK_MAC), "{}", ctx());
        prop_assert_eq!(v.ttl + 1, before.ttl, "{}", ctx());
        if o.mark == 0 {
            prop_assert_eq!((v.src, v.dst), (before.src, before.dst), "translated without a verdict: {}", ctx());
        } else if v.src == before.src {
            prop_assert_eq!(handoff::reason(o.mark), Some(Reason::PassMasqueradeOff), "left untranslated: {}", ctx());
        }
        prop_assert!(craft::ip_checksum_ok(&o.out), "IPv4 checksum broken by the TTL: {}", ctx());
    } else if o.action == Action::Redirect {
        let v = craft::view(&o.out);
        let to = SANDBOXES.iter().find(|s| s.ip == v.dst);
        prop_assert!(to.is_some(), "redirected to {} which is no sandbox: {}", v.dst, ctx());
        prop_assert_eq!(v.eth_dst, mac_of(v.dst), "redirected with another's MAC: {}", ctx());
    }
    // 7. A verdict handed over is what the uplink's egress counts, on the
    //    packet as it came, and the mark is given back.
    if fed.mark != 0 {
        prop_assert_eq!(fed.hook, Hook::ToUplink, "{}", ctx());
        prop_assert_eq!(Some(reason), handoff::reason(fed.mark), "{}", ctx());
        prop_assert_eq!((&o.out, o.mark), (&fed.frame, 0), "{}", ctx());
    } else if reason == Reason::RedirectUplink {
        prop_assert!(o.mark == 0 || handoff::reason(o.mark).is_some(), "mark {:#x}: {}", o.mark, ctx());
    } else {
        prop_assert_eq!(o.mark, 0, "a mark left by {}: {}", reason.name(), ctx());
    }
    let translated = (reason as u32) < 16;
    if translated && r.clean && o.out.len() == fed.frame.len() {
        prop_assert!(craft::ip_checksum_ok(&o.out), "IPv4 checksum broken by {}: {}", reason.name(), ctx());
        prop_assert!(craft::l4_checksum_ok(&o.out), "transport checksum broken by {}: {}", reason.name(), ctx());
    }
    Ok(())
}

fn all_counters(rig: &Rig) -> Vec<u64> {
    let mut sums = Vec::new();
    for hook in Hook::ALL {
        sums.push(rig.counters(hook).unwrap().iter().map(|s| s.packets).sum());
    }
    sums
}

#[test]
fn generated_frames_keep_the_invariants() {
    // A small table: a case tracks at most 16 connections, and every frame
    // snapshots the table (an iteration walks every bucket of the map).
    let options = RigOptions { conntrack_max: Some(4096), ..RigOptions::default() };
    let rig = RefCell::new(Rig::with(options).expect("building the program rig"));
    let fed_total = Cell::new(0u64);
    let socket_before = socket_packets(&rig.borrow());
    let config = Config { cases: CASES, failure_persistence: None, max_shrink_iters: 2000, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let result = runner.run(&prop::collection::vec(step(), 1..=16), |steps| {
        rig.borrow_mut().clear_conntrack().map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
        let rig = rig.borrow();
        let before = all_counters(&rig);
        let mut per_hook = [0u64; 4];
        let mut history: Vec<(Fed, Outcome)> = Vec::new();
        for s in &steps {
            let fed = render(&rig, s, &history);
            let o = rig
                .run_full(fed.hook, fed.ifindex, &fed.frame, fed.mark, true)
                .map_err(|e| TestCaseError::fail(format!("{e:#}: {:?} {:02x?}", fed.hook, fed.frame)))?;
            fed_total.set(fed_total.get() + 1);
            per_hook[Hook::ALL.iter().position(|h| *h == fed.hook).unwrap()] += 1;
            check(&fed, &o)?;
            history.push((fed, o));
        }
        // The counters add up, program by program.
        let after = all_counters(&rig);
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        prop_assert_eq!(moved, per_hook.to_vec(), "reason counters vs frames fed, per hook");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let rig = rig.into_inner();
    assert_eq!(socket_packets(&rig), socket_before, "the socket programs counted nothing");
    let fed = fed_total.get();
    eprintln!("progtest props: {fed} frames in {CASES} cases");
    assert!(fed >= FRAMES, "only {fed} frames fed");
}

fn socket_packets(rig: &Rig) -> u64 {
    rig.program_counters(Program::Socket).unwrap().iter().map(|s| s.packets).sum()
}
