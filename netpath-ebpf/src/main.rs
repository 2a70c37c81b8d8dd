//! Kernel programs of netpath. One entry program per attach point; the
//! mechanisms they share live in their own modules.
#![no_std]
#![no_main]

mod conntrack;
mod from_container;
mod maps;
mod nat;
mod packet;
mod publish;
mod route;
mod stats;
mod uplink;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// TC ingress of every sandbox's host-side veth: sees what a sandbox sends.
#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    from_container::run(&ctx)
}

/// TC ingress of each uplink: what arrives from the outside.
#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    uplink::from_uplink(&ctx)
}

/// TC egress of each uplink: what leaves for the outside.
#[classifier]
pub fn to_uplink(ctx: TcContext) -> i32 {
    uplink::to_uplink(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
