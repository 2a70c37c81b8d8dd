//! Host-local access to published ports at the socket layer, the way
//! Cilium's socket LB does it: a process of the host namespace that connects
//! (or sends) to `127.0.0.1:PORT` or to a host address gets its socket
//! pointed at the sandbox directly. No proxy, no `route_localnet`, no
//! per-packet work. UDP replies are shown as coming from the address the
//! process asked for.
use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use netpath_common::{FlowKey, IPPROTO_TCP, IPPROTO_UDP, Program, Reason, SockRevKey, SockRevValue};

use crate::maps::{self, HOST_ADDRS, SOCK_REVNAT};

/// The verdict that lets the operation proceed: these programs only ever
/// change where a socket goes, never refuse it.
const ALLOW: i32 = 1;
const PROGRAM: Program = Program::Socket;

/// The single exit of the socket programs: counts what was done (no packet,
/// so no bytes) and lets the operation proceed.
#[inline(always)]
fn exit(reason: Reason) -> i32 {
    crate::stats::count(PROGRAM, reason, 0);
    ALLOW
}

#[inline(always)]
fn in_host_netns(ctx: &SockAddrContext, cookie: u64) -> bool {
    // SAFETY: plain helper call on the program's own context.
    cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } == cookie
}

#[inline(always)]
fn is_host_address(addr: [u8; 4]) -> bool {
    // SAFETY: presence check only.
    addr[0] == 127 || unsafe { HOST_ADDRS.get(addr) }.is_some()
}

/// Points the socket address at the published target, if any; with
/// `remember`, records the original for `recvmsg4`.
#[inline(always)]
fn steer(ctx: &SockAddrContext, remember: bool) -> Reason {
    let cfg = maps::config();
    if !in_host_netns(ctx, cfg.host_netns_cookie) {
        return Reason::PassNotOurs;
    }
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = match sa.protocol {
        6 => IPPROTO_TCP,
        17 => IPPROTO_UDP,
        _ => return Reason::PassNotOurs,
    };
    let daddr = sa.user_ip4.to_ne_bytes();
    if !is_host_address(daddr) {
        return Reason::PassNotOurs;
    }
    let dport = u16::from_be(sa.user_port as u16);
    let key = FlowKey { daddr, dport, proto, ..FlowKey::default() };
    let mut lookup = key;
    // Loopback reaches what is published on every address.
    if daddr[0] == 127 && daddr != [127, 0, 0, 1] {
        lookup.daddr = [127, 0, 0, 1];
    }
    let Some(target) = crate::publish::find(&lookup, cfg.published_range_count) else {
        return Reason::PassNotOurs;
    };
    if remember {
        // SAFETY: plain helper call on the program's own context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        let rev = SockRevKey { cookie, addr: target.addr, port: target.port, _pad: 0 };
        let _ = SOCK_REVNAT.insert(rev, SockRevValue { addr: daddr, port: dport, _pad: 0 }, 0);
    }
    sa.user_ip4 = u32::from_ne_bytes(target.addr);
    sa.user_port = target.port.to_be() as u32;
    Reason::SocketRedirect
}

#[inline(always)]
pub fn connect4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let udp = unsafe { (*ctx.sock_addr).protocol } == 17;
    exit(steer(ctx, udp))
}

#[inline(always)]
pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    exit(steer(ctx, true))
}

#[inline(always)]
pub fn recvmsg4(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: plain helper call on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let key = SockRevKey { cookie, addr: sa.user_ip4.to_ne_bytes(), port: u16::from_be(sa.user_port as u16), _pad: 0 };
    // SAFETY: value copied out immediately.
    let Some(orig) = unsafe { SOCK_REVNAT.get(key) }.copied() else {
        return exit(Reason::PassNotOurs);
    };
    sa.user_ip4 = u32::from_ne_bytes(orig.addr);
    sa.user_port = orig.port.to_be() as u32;
    exit(Reason::SocketReplyRestored)
}
