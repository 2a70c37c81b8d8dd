//! XDP on the uplinks: the common case of `from_uplink` done before the
//! kernel builds anything for the packet. TCP and UDP that belong to a
//! translated connection into a sandbox — replies to masqueraded
//! connections, connections to published ports, new ones included — are
//! translated here and redirected to the sandbox's veth. Everything else
//! (ICMP, IP options, fragments, traffic for the host, targets that cannot
//! take XDP frames) passes up untouched to the TC programs, which own every
//! policy decision and count what they drop.
use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_PASS},
    helpers::generated::bpf_redirect,
    programs::XdpContext,
};
use netpath_common::{
    Endpoint, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Program, csum, ct_flags, endpoint_flags::XDP_TARGET,
};

use crate::{
    conntrack, maps,
    packet::{ETH_HLEN, ETH_P_IP, EthHdr, IPV4_HLEN, Ipv4Hdr, Kind, Packet},
    publish,
    stats::count,
};

const PROGRAM: Program = Program::XdpFromUplink;
const L4_OFF: usize = ETH_HLEN + IPV4_HLEN;
const TCP_CSUM_OFF: usize = L4_OFF + 16;
const TCP_FLAGS_OFF: usize = L4_OFF + 13;
const UDP_CSUM_OFF: usize = L4_OFF + 6;

/// A frame XDP can translate on its own: Ethernet, IPv4 without options,
/// not a fragment, TCP or UDP, every field it touches bounds-checked.
struct Frame {
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    ports: *mut [u16; 2],
    l4_check: *mut u16,
    packet: Packet,
}

/// A pointer to a `T` at `offset`, or `None` when the packet is shorter.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
fn frame(ctx: &XdpContext) -> Option<Frame> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
    // SAFETY: both headers were bounds-checked against data_end above.
    let (eth_proto, h) = unsafe { (u16::from_be((*eth).proto_be), &*ip) };
    if eth_proto != ETH_P_IP || h.version_ihl != 0x45 || u16::from_be(h.frag_off_be) & 0x3fff != 0 {
        return None;
    }
    let ports: *mut [u16; 2] = ptr_at(ctx, L4_OFF)?;
    let (kind, l4_check, tcp_flags) = match h.protocol {
        IPPROTO_TCP => {
            let flags: *mut u8 = ptr_at(ctx, TCP_FLAGS_OFF)?;
            // SAFETY: bounds-checked just above.
            (Kind::Tcp, ptr_at::<u16>(ctx, TCP_CSUM_OFF)?, unsafe { *flags })
        }
        IPPROTO_UDP => (Kind::Udp, ptr_at::<u16>(ctx, UDP_CSUM_OFF)?, 0),
        _ => return None,
    };
    // SAFETY: bounds-checked above.
    let [sport, dport] = unsafe { *ports }.map(u16::from_be);
    let key = FlowKey { saddr: h.saddr, daddr: h.daddr, sport, dport, proto: h.protocol, ..FlowKey::default() };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let packet = Packet { key, kind, l4_off: L4_OFF, tcp_flags, ttl: h.ttl, len, fragment: false };
    Some(Frame { eth, ip, ports, l4_check, packet })
}

#[inline(always)]
fn pass() -> u32 {
    count(PROGRAM, |c| c.passed_to_tc += 1);
    XDP_PASS
}

/// The sandbox behind `addr`, if XDP may hand it frames.
#[inline(always)]
fn xdp_target(addr: [u8; 4]) -> Option<Endpoint> {
    maps::endpoint(addr).filter(|ep| ep.flags & XDP_TARGET != 0)
}

#[inline(always)]
pub fn from_uplink(ctx: &XdpContext) -> u32 {
    let Some(f) = frame(ctx) else {
        return pass();
    };
    let p = &f.packet;
    // The kernel answers expiring packets with time exceeded.
    if p.ttl <= 1 {
        return pass();
    }
    let cfg = maps::config();
    let now = conntrack::now();
    let (to, dst) = if let Some(entry) = conntrack::lookup(&p.key, p, &cfg, now) {
        let Some(dst) = xdp_target(entry.rewrite.daddr) else {
            return pass();
        };
        (entry.rewrite, dst)
    } else {
        // SAFETY: the context pointer is valid for the whole program run.
        let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
        let Some(target) = publish::arriving(ctx.ctx.cast(), ifindex, &p.key, cfg.published_range_count) else {
            return pass();
        };
        let Some(dst) = xdp_target(target.addr) else {
            return pass();
        };
        let to = FlowKey { daddr: target.addr, dport: target.port, ..p.key };
        match conntrack::open_with_port(&p.key, to, conntrack::initial_state(p), ct_flags::DNAT, now, false) {
            Ok(to) => {
                count(PROGRAM, |c| c.dnat_new += 1);
                (to, dst)
            }
            // Let TC refuse it and count why.
            Err(_) => return pass(),
        }
    };
    let gateway_mac = maps::network(dst.network_id).map(|n| n.gateway_mac).unwrap_or_default();
    // SAFETY: `frame` bounds-checked every header written here.
    unsafe { rewrite(&f, &to, &dst.mac, &gateway_mac) };
    let len = u64::from(p.len);
    count(PROGRAM, |c| {
        c.nat_packets += 1;
        c.nat_bytes += len;
    });
    // SAFETY: plain helper call with scalar arguments.
    let verdict = unsafe { bpf_redirect(dst.host_ifindex, 0) } as u32;
    if verdict == XDP_ABORTED {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
    }
    verdict
}

/// Writes `to`'s addresses and ports, one hop less of TTL and the MACs of
/// the hop into the sandbox, with both checksums updated incrementally.
///
/// # Safety
/// The frame's pointers must cover the headers `frame` checked.
#[inline(always)]
unsafe fn rewrite(f: &Frame, to: &FlowKey, dst_mac: &[u8; 6], src_mac: &[u8; 6]) {
    let from = &f.packet.key;
    // A UDP checksum of zero means "none" and stays so.
    let zero_means_none = f.packet.kind == Kind::Udp;
    // SAFETY: per the function's contract.
    unsafe {
        let ip = &mut *f.ip;
        let mut l4 = *f.l4_check;
        let update_l4 = !(zero_means_none && l4 == 0);
        let mut l3 = ip.check;
        for (field, old, new) in [(&mut ip.saddr, from.saddr, to.saddr), (&mut ip.daddr, from.daddr, to.daddr)] {
            if old != new {
                l3 = csum::replace_addr(l3, old, new);
                l4 = csum::replace_addr(l4, old, new);
                *field = new;
            }
        }
        for (i, old, new) in [(0, from.sport, to.sport), (1, from.dport, to.dport)] {
            if old != new {
                l4 = csum::replace_port(l4, old, new);
                (*f.ports)[i] = new.to_be();
            }
        }
        let ttl_word = |ttl: u8| u16::from_ne_bytes([ttl, ip.protocol]);
        l3 = csum::replace16(l3, ttl_word(ip.ttl), ttl_word(ip.ttl - 1));
        ip.ttl -= 1;
        ip.check = l3;
        if update_l4 {
            *f.l4_check = if zero_means_none && l4 == 0 { 0xffff } else { l4 };
        }
        (*f.eth).dst = *dst_mac;
        (*f.eth).src = *src_mac;
    }
}
