//! Parsing, for TC and XDP alike: Ethernet and IPv4 through direct packet
//! access, the transport header through the context's `load` (the IP header
//! length varies).
use netpath_common::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::{ctx::Ctx, frag};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IP_OFF: usize = ETH_HLEN;
pub const IP_TTL_OFF: usize = IP_OFF + 8;
pub const IP_CSUM_OFF: usize = IP_OFF + 10;
pub const IP_SRC_OFF: usize = IP_OFF + 12;
pub const IP_DST_OFF: usize = IP_OFF + 16;
pub const IPV4_HLEN: usize = 20;
/// "More fragments", in the flags and offset field.
const IP_MF: u16 = 0x2000;
/// "More fragments" and the fragment offset.
pub const IP_FRAG_MASK: u16 = 0x3fff;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Codes of `ICMP_DEST_UNREACH` only the destination host itself sends.
pub const ICMP_PROT_UNREACH: u8 = 2;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMP_HLEN: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto_be: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// What the transport header is, as far as NAT cares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    EchoRequest,
    EchoReply,
    /// Destination unreachable, time exceeded or parameter problem: carries
    /// the header of the packet it is about.
    IcmpError,
    /// A later fragment of a datagram whose first piece was seen: no
    /// transport header, the ports come from the first piece (`frag.rs`);
    /// only its addresses are translated.
    Fragment,
    /// Anything NAT leaves alone: other protocols, fragments whose first
    /// piece was not seen.
    Other,
}

/// Where a packet sits in its datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    Whole,
    /// Offset zero, more fragments: carries the transport header.
    First,
    /// Offset above zero: no transport header.
    Later,
}

pub struct Packet {
    pub key: FlowKey,
    pub kind: Kind,
    pub l4_off: usize,
    pub tcp_flags: u8,
    pub ttl: u8,
    pub frag: Frag,
    /// IPv4 identification (network order), which ties fragments together.
    pub ip_id: u16,
}

pub enum Parsed {
    Ipv4(Packet),
    NotIpv4,
    Malformed,
}

/// ARP for IPv4 over Ethernet, as it follows the Ethernet header.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct ArpHdr {
    pub htype_be: u16,
    pub ptype_be: u16,
    pub hlen: u8,
    pub plen: u8,
    pub op_be: u16,
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

/// The Ethernet header of the frame: its source MAC and what it carries.
#[inline(always)]
pub fn ethernet<C: Ctx>(ctx: &C) -> Option<([u8; 6], u16)> {
    let eth = ctx.ptr_at::<EthHdr>(0)?;
    // SAFETY: ptr_at checked that the header lies within the packet.
    unsafe { Some(((*eth).src, u16::from_be((*eth).proto_be))) }
}

/// The Ethernet header's (destination, source) MACs, read once for the
/// paths that check the source and then address the frame.
#[inline(always)]
pub fn ethernet_addrs<C: Ctx>(ctx: &C) -> Option<([u8; 6], [u8; 6])> {
    let eth = ctx.ptr_at::<EthHdr>(0)?;
    // SAFETY: ptr_at checked that the header lies within the packet.
    unsafe { Some(((*eth).dst, (*eth).src)) }
}

/// The ARP header, copied once, or `None` when the frame is not
/// well-formed ARP for IPv4 over Ethernet.
#[inline(always)]
pub fn arp_ipv4<C: Ctx>(ctx: &C) -> Option<ArpHdr> {
    let arp = ctx.ptr_at::<ArpHdr>(ETH_HLEN)?;
    // SAFETY: ptr_at checked that the header lies within the packet.
    let a = unsafe { *arp };
    let (htype, ptype) = (u16::from_be(a.htype_be), u16::from_be(a.ptype_be));
    if htype != 1 || ptype != ETH_P_IP || a.hlen != 6 || a.plen != 4 {
        return None;
    }
    Some(a)
}

/// Parses Ethernet and IPv4 only: enough to forward between sandboxes.
#[inline(always)]
pub fn parse_l3<C: Ctx>(ctx: &C) -> Parsed {
    let Some(eth) = ctx.ptr_at::<EthHdr>(0) else {
        return Parsed::Malformed;
    };
    // SAFETY: ptr_at checked that the header lies within the packet.
    if u16::from_be(unsafe { (*eth).proto_be }) != ETH_P_IP {
        return Parsed::NotIpv4;
    }
    let Some(ip) = ctx.ptr_at::<Ipv4Hdr>(IP_OFF) else {
        return Parsed::Malformed;
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    let ihl = (ip.version_ihl & 0x0f) as usize * 4;
    if ip.version_ihl >> 4 != 4 || ihl < IPV4_HLEN || IP_OFF + ihl > ctx.len() as usize {
        return Parsed::Malformed;
    }
    // The total length must hold the header and lie within what arrived
    // (Ethernet padding may follow it). A GSO packet over 64 KiB (BIG TCP)
    // carries 0 here, as the kernel's own receive path accepts.
    let tot = u16::from_be(ip.tot_len_be) as usize;
    let big_gso = tot == 0 && ctx.len() as usize > IP_OFF + 0xffff;
    if !big_gso && (tot < ihl || IP_OFF + tot > ctx.len() as usize) {
        return Parsed::Malformed;
    }
    Parsed::Ipv4(Packet {
        key: FlowKey { saddr: ip.saddr, daddr: ip.daddr, proto: ip.protocol, ..FlowKey::default() },
        kind: Kind::Other,
        l4_off: IP_OFF + ihl,
        tcp_flags: 0,
        ttl: ip.ttl,
        frag: match u16::from_be(ip.frag_off_be) & IP_FRAG_MASK {
            0 => Frag::Whole,
            IP_MF => Frag::First,
            _ => Frag::Later,
        },
        ip_id: ip.id_be,
    })
}

/// Completes `p` with its transport header; false when that is cut short.
/// A first fragment's ports are remembered for the later ones, which get
/// them back (kind `Fragment`) or stay `Other` when the first was not seen.
#[inline(always)]
pub fn parse_l4<C: Ctx>(ctx: &C, p: &mut Packet) -> bool {
    if !matches!(p.key.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
        return true;
    }
    if p.frag == Frag::Later {
        if let Some(ports) = frag::ports(p) {
            p.key.sport = ports.sport;
            p.key.dport = ports.dport;
            p.kind = Kind::Fragment;
        }
        return true;
    }
    let complete = match p.key.proto {
        IPPROTO_TCP => {
            parse_ports(ctx, p, Kind::Tcp) && load_pair(ctx, p.l4_off + 12).map(|[_, f]| p.tcp_flags = f).is_some()
        }
        IPPROTO_UDP => parse_ports(ctx, p, Kind::Udp),
        _ => parse_icmp(ctx, p),
    };
    if complete && p.frag == Frag::First {
        frag::remember(p);
    }
    complete
}

/// A later fragment whose first piece was not seen, of a protocol NAT
/// translates: nothing can tell where it belongs.
#[inline(always)]
pub fn orphan_fragment(p: &Packet) -> bool {
    p.frag == Frag::Later && p.kind == Kind::Other && matches!(p.key.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP)
}

/// Parses everything NAT needs.
#[inline(always)]
pub fn parse<C: Ctx>(ctx: &C) -> Parsed {
    match parse_l3(ctx) {
        Parsed::Ipv4(mut p) => {
            if parse_l4(ctx, &mut p) {
                Parsed::Ipv4(p)
            } else {
                Parsed::Malformed
            }
        }
        other => other,
    }
}

#[inline(always)]
/// The two bytes at `off`. Header bytes are read in pairs: a one-byte
/// bounds check compiles to a comparison the verifier cannot turn into a
/// readable range, which XDP's direct access needs (see ctx.rs).
fn load_pair<C: Ctx>(ctx: &C, off: usize) -> Option<[u8; 2]> {
    ctx.load::<[u8; 2]>(off)
}

#[inline(always)]
fn load_port<C: Ctx>(ctx: &C, off: usize) -> Option<u16> {
    ctx.load::<u16>(off).map(u16::from_be)
}

#[inline(always)]
fn parse_ports<C: Ctx>(ctx: &C, p: &mut Packet, kind: Kind) -> bool {
    let (Some(sport), Some(dport)) = (load_port(ctx, p.l4_off), load_port(ctx, p.l4_off + 2)) else {
        return false;
    };
    p.key.sport = sport;
    p.key.dport = dport;
    p.kind = kind;
    true
}

#[inline(always)]
fn parse_icmp<C: Ctx>(ctx: &C, p: &mut Packet) -> bool {
    let Some([icmp_type, _]) = load_pair(ctx, p.l4_off) else {
        return false;
    };
    match icmp_type {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
            let Some(id) = load_port(ctx, p.l4_off + 4) else {
                return false;
            };
            if icmp_type == ICMP_ECHO_REQUEST {
                p.key.sport = id;
                p.kind = Kind::EchoRequest;
            } else {
                p.key.dport = id;
                p.kind = Kind::EchoReply;
            }
        }
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM => p.kind = Kind::IcmpError,
        _ => {}
    }
    true
}

/// The header quoted inside an ICMP error: the packet as it was sent.
pub struct Quoted {
    pub key: FlowKey,
    pub kind: Kind,
    pub ip_off: usize,
    pub l4_off: usize,
}

#[inline(always)]
pub fn parse_quoted<C: Ctx>(ctx: &C, outer: &Packet) -> Option<Quoted> {
    let ip_off = outer.l4_off + ICMP_HLEN;
    let [version_ihl, _] = load_pair(ctx, ip_off)?;
    // Options in the quoted header are rare enough to leave to the kernel.
    if version_ihl != 0x45 {
        return None;
    }
    let [_, proto] = load_pair(ctx, ip_off + 8)?;
    let saddr = ctx.load::<[u8; 4]>(ip_off + 12)?;
    let daddr = ctx.load::<[u8; 4]>(ip_off + 16)?;
    let l4_off = ip_off + IPV4_HLEN;
    let mut key = FlowKey { saddr, daddr, proto, ..FlowKey::default() };
    let kind = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            key.sport = load_port(ctx, l4_off)?;
            key.dport = load_port(ctx, l4_off + 2)?;
            if proto == IPPROTO_TCP { Kind::Tcp } else { Kind::Udp }
        }
        IPPROTO_ICMP => {
            let id = load_port(ctx, l4_off + 4)?;
            match load_pair(ctx, l4_off)?[0] {
                ICMP_ECHO_REQUEST => {
                    key.sport = id;
                    Kind::EchoRequest
                }
                ICMP_ECHO_REPLY => {
                    key.dport = id;
                    Kind::EchoReply
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(Quoted { key, kind, ip_off, l4_off })
}
