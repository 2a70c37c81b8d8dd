//! Kernel programs of netpath. One entry program per attach point; the
//! mechanisms they share live in their own modules.
#![no_std]
#![no_main]

mod forward;
mod maps;
mod packet;
mod stats;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// TC ingress of every sandbox's host-side veth: sees what the sandbox sends.
#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    forward::from_container(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
