//! Where a packet goes after netpath decided on it: straight into a
//! sandbox, or a question to the kernel's FIB.
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NOT_FWDED, bpf_fib_lookup},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect_peer},
    programs::TcContext,
};
use core::ffi::c_void;

use netpath_common::{Endpoint, Reason};

use crate::{
    ctx::Ctx,
    stats::{
        Verdict,
        tc::{V, drop},
    },
};

pub const TC_ACT_REDIRECT: i32 = 7;
pub const AF_INET: u8 = 2;

/// Hands the packet to the sandbox behind `ep` (TC ingress only).
#[inline(always)]
pub fn into_sandbox(ep: &Endpoint) -> i32 {
    // SAFETY: plain helper call with scalar arguments.
    unsafe { bpf_redirect_peer(ep.host_ifindex, 0) as i32 }
}

/// Delivers an untranslated frame into the sandbox behind `dst`, counted
/// under `reason`. `eth_dst` is the frame's destination MAC as it arrived:
/// the sender resolved the neighbour itself (an ARP reply of ours for a
/// remote one), so it is almost always `dst`'s already and is written only
/// when not, through the helper (see ctx.rs: a direct write would unclone
/// every skb).
#[inline(always)]
pub fn to_sandbox(ctx: &TcContext, eth_dst: &[u8; 6], dst: &Endpoint, reason: Reason) -> V {
    if *eth_dst != dst.mac && Ctx::store(ctx, 0, &dst.mac).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    redirect_into(dst, reason)
}

/// Hands the packet to the sandbox behind `dst` as it is, counted under
/// `reason`; a failed redirect is a drop of its own.
#[inline(always)]
pub fn redirect_into(dst: &Endpoint, reason: Reason) -> V {
    let action = into_sandbox(dst);
    if action == TC_ACT_REDIRECT { Verdict::new(reason, action) } else { drop(Reason::DropRedirectFailed) }
}

/// Whether the kernel would deliver a packet for `daddr` locally (an address
/// of this host), judged by the FIB as seen from the ingress interface.
/// `ctx` is the program's context (`__sk_buff` or `xdp_md`).
#[inline(always)]
pub fn is_local(ctx: *mut c_void, ifindex: u32, saddr: [u8; 4], daddr: [u8; 4]) -> bool {
    let mut params = fib_params(ifindex, saddr, daddr);
    fib(ctx, &mut params) == BPF_FIB_LKUP_RET_NOT_FWDED as i64
}

/// A FIB question about an IPv4 packet from `saddr` to `daddr` as received
/// on `ifindex`; callers add what else they know (ports, length, TOS).
#[inline(always)]
pub fn fib_params(ifindex: u32, saddr: [u8; 4], daddr: [u8; 4]) -> bpf_fib_lookup {
    // SAFETY: zeroed is a valid bpf_fib_lookup.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(saddr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(daddr);
    params
}

/// Asks the FIB (`bpf_fib_lookup`, no flags); the helper's return value.
#[inline(always)]
pub fn fib(ctx: *mut c_void, params: &mut bpf_fib_lookup) -> i64 {
    // SAFETY: params lives on the caller's stack for the duration of the call.
    unsafe { fib_lookup(ctx, params, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) }
}
