//! Frames built byte by byte for the program-level tests: every header
//! field settable (IP options, fragment bits, total length, TCP flags,
//! ICMP errors quoting any header), checksums right unless a test breaks
//! them on purpose, and a reader for what a program handed back.
use std::net::{Ipv4Addr, SocketAddrV4};

pub use crate::frames::{BROADCAST, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Mac, checksum, ethernet};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// IPv4 "more fragments" and "don't fragment" bits of the flags/offset word.
pub const MF: u16 = 0x2000;
pub const DF: u16 = 0x4000;

/// An IPv4 header as a test wants it; `build` fills total length and
/// checksum from what follows it.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units) as on the wire.
    pub frag: u16,
    /// Option bytes; padded with zeros (end of options) to a multiple of 4.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Ipv4 { src, dst, proto, ttl: 64, id: 0x1234, frag: DF, options: Vec::new() }
    }

    /// The header followed by `l4`.
    pub fn build(&self, l4: &[u8]) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hlen = 20 + opts.len();
        let total = (hlen + l4.len()) as u16;
        let mut h = vec![0x40 | (hlen / 4) as u8, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&opts);
        let c = checksum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(l4);
        h
    }
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    [&src.octets()[..], &dst.octets()[..], &[0, proto], &(len as u16).to_be_bytes()[..]].concat()
}

/// A TCP segment (20-byte header) with its checksum for `src` → `dst`.
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&(if flags & ACK != 0 { 2000u32 } else { 0 }).to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = checksum(&[&pseudo(*src.ip(), *dst.ip(), TCP, t.len()), &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A UDP datagram with its checksum for `src` → `dst`.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut c = checksum(&[&pseudo(*src.ip(), *dst.ip(), UDP, len), &u]);
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An ICMP message: type, code, the 4 bytes after the checksum, the rest.
pub fn icmp(kind: u8, code: u8, rest_of_header: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest_of_header);
    m.extend_from_slice(body);
    let c = checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

pub fn echo(request: bool, id: u16, seq: u16) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp(if request { ICMP_ECHO_REQUEST } else { ICMP_ECHO_REPLY }, 0, [a, b, c, d], b"netpath-progtest")
}

/// An ICMP error of `kind`/`code` quoting `packet` (an IPv4 packet, header
/// first) as routers do: its header and the first 8 bytes after it.
pub fn icmp_error(kind: u8, code: u8, packet: &[u8]) -> Vec<u8> {
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let quote = &packet[..packet.len().min(ihl + 8)];
    // Fragmentation needed carries the next hop's MTU.
    let rest = if kind == ICMP_DEST_UNREACH && code == 4 { [0, 0, 0x05, 0xdc] } else { [0; 4] };
    icmp(kind, code, rest, quote)
}

/// Ethernet + IPv4 + `l4`.
pub fn frame(dst_mac: Mac, src_mac: Mac, ip: &Ipv4, l4: &[u8]) -> Vec<u8> {
    ethernet(dst_mac, src_mac, ETH_P_IP, &ip.build(l4))
}

/// ARP for IPv4 over Ethernet.
pub fn arp(eth: (Mac, Mac), op: u16, sender: (Mac, Ipv4Addr), target: (Mac, Ipv4Addr)) -> Vec<u8> {
    crate::frames::arp(eth.0, eth.1, op, sender.0, sender.1, target.0, target.1)
}

/// What a program handed back, read at fixed offsets (no IP options in the
/// frames a test reads back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

pub fn view(f: &[u8]) -> View {
    let b = |i: usize| f[i];
    let addr = |i: usize| Ipv4Addr::new(b(i), b(i + 1), b(i + 2), b(i + 3));
    let ihl = usize::from(b(14) & 0x0f) * 4;
    let l4 = 14 + ihl;
    let port = |i: usize| if f.len() >= i + 2 { u16::from_be_bytes([f[i], f[i + 1]]) } else { 0 };
    View {
        eth_dst: f[0..6].try_into().unwrap(),
        eth_src: f[6..12].try_into().unwrap(),
        src: addr(26),
        dst: addr(30),
        ttl: b(22),
        proto: b(23),
        sport: port(l4),
        dport: port(l4 + 2),
    }
}

/// Whether the IPv4 header checksum of `f` (an Ethernet frame) holds.
pub fn ip_checksum_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    checksum(&[&f[14..14 + ihl]]) == 0
}

/// Whether the transport checksum of `f` holds (TCP, UDP, ICMP; whole,
/// unfragmented packets).
pub fn l4_checksum_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let (l4_start, end) = (14 + ihl, 14 + total);
    let l4 = &f[l4_start..end];
    let v = view(f);
    match v.proto {
        TCP | UDP => checksum(&[&pseudo(v.src, v.dst, v.proto, l4.len()), l4]) == 0,
        ICMP => checksum(&[l4]) == 0,
        _ => true,
    }
}

/// `f` with the two bytes at `off` set to `v` (checksums untouched).
pub fn with_u16(mut f: Vec<u8>, off: usize, v: u16) -> Vec<u8> {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
    f
}
