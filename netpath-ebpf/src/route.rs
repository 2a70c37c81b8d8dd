//! Where a packet goes after netpath decided on it: straight into a
//! sandbox, or a question to the kernel's FIB.
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NOT_FWDED, bpf_fib_lookup},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect_peer},
};
use core::ffi::c_void;

use netpath_common::Endpoint;

pub const TC_ACT_REDIRECT: i32 = 7;
const AF_INET: u8 = 2;

/// Hands the packet to the sandbox behind `ep` (TC ingress only).
#[inline(always)]
pub fn into_sandbox(ep: &Endpoint) -> i32 {
    // SAFETY: plain helper call with scalar arguments.
    unsafe { bpf_redirect_peer(ep.host_ifindex, 0) as i32 }
}

/// Whether the kernel would deliver a packet for `daddr` locally (an address
/// of this host), judged by the FIB as seen from the ingress interface.
/// `ctx` is the program's context (`__sk_buff` or `xdp_md`).
#[inline(always)]
pub fn is_local(ctx: *mut c_void, ifindex: u32, saddr: [u8; 4], daddr: [u8; 4]) -> bool {
    // SAFETY: zeroed is a valid bpf_fib_lookup.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(saddr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(daddr);
    // SAFETY: params lives on the stack for the duration of the call.
    let ret = unsafe { fib_lookup(ctx, &mut params, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    ret == BPF_FIB_LKUP_RET_NOT_FWDED as i64
}
