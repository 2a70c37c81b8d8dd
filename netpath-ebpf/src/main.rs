//! Kernel programs of netpath. One entry program per attach point; the
//! mechanisms they share live in their own modules. Each program computes a
//! verdict (a named reason and an action) and leaves through one exit,
//! `stats::exit`, which counts it.
#![no_std]
#![no_main]

mod arp;
mod conntrack;
mod ctx;
mod fib;
mod frag;
mod from_container;
mod from_overlay;
mod handoff;
mod maps;
mod masquerade;
mod nat;
mod packet;
mod publish;
mod route;
mod socket;
mod stats;
mod tunnel;
mod uplink;
mod uplink_xdp;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};
use netpath_common::Program;
use stats::exit;

/// TC ingress of every sandbox's host-side veth: sees what a sandbox sends.
#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    exit(&ctx, Program::FromContainer, from_container::run(&ctx))
}

/// TC ingress of the host's VXLAN device: what sandboxes of other hosts
/// send to this host's, decapsulated.
#[classifier]
pub fn from_overlay(ctx: TcContext) -> i32 {
    exit(&ctx, Program::FromOverlay, from_overlay::run(&ctx))
}

/// TC ingress of each uplink: what arrives from the outside.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    exit(&ctx, Program::FromUplink, uplink::from_uplink(&ctx))
}

/// XDP of each uplink (when configured): the translated TCP/UDP flows into
/// sandboxes, before any socket buffer exists; the rest goes on to TC.
#[xdp]
pub fn xdp_from_uplink(ctx: XdpContext) -> u32 {
    exit(&ctx, Program::XdpFromUplink, uplink_xdp::from_uplink(&ctx))
}

/// TC egress of each uplink: what leaves for the outside.
#[classifier]
pub fn to_uplink(ctx: TcContext) -> i32 {
    exit(&ctx, Program::ToUplink, uplink::to_uplink(&ctx))
}

/// cgroup connect4: TCP and connected UDP sockets of the host namespace.
#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    socket::connect4(&ctx)
}

/// cgroup sendmsg4: unconnected UDP sends of the host namespace.
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    socket::sendmsg4(&ctx)
}

/// cgroup recvmsg4: replies shown as coming from the address asked for.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    socket::recvmsg4(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
