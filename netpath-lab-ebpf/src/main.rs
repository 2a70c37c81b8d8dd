//! Not part of the data path: the lab's stand-in for a NIC's receive ring.
//! Run through `BPF_PROG_TEST_RUN` in live-frames mode at the outside end of
//! the lab's uplink, it stamps the header set at load time on each frame and
//! transmits it through that veth, so the uplink receives bare frames (no
//! socket buffer, no sender stack), as from a wire. Recycled frames may
//! come back rewritten by NAT, hence the stamp on every run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::XDP_ABORTED, helpers::generated::bpf_redirect, macros::xdp, programs::XdpContext,
};

/// Ethernet + IPv4 (no options) + UDP.
const HEADER_LEN: usize = 42;

#[unsafe(no_mangle)]
static HEADER: [u8; HEADER_LEN] = [0; HEADER_LEN];

#[xdp]
pub fn lab_wire(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + HEADER_LEN > ctx.data_end() {
        return XDP_ABORTED;
    }
    // SAFETY: volatile so the loader's value is read, not the zeros above;
    // the frame holds HEADER_LEN bytes (checked); the context is valid.
    unsafe {
        let header = core::ptr::read_volatile(&HEADER);
        core::ptr::write_unaligned(start as *mut [u8; HEADER_LEN], header);
        bpf_redirect((*ctx.ctx).ingress_ifindex, 0) as u32
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
