//! The uplink's verdict, decided on the sandbox's veth and carried to the
//! uplink's egress with the packet (Cilium's `MARK_MAGIC_SNAT_DONE`).
//!
//! A packet the data path routes out of an uplink itself (`fib.rs`) has
//! been parsed and its connection looked up on the veth already, so it is
//! translated there too; `to_uplink`, which then runs on it, needs only to
//! count what was decided instead of parsing it and asking conntrack again.
//!
//! The verdict travels in `skb->mark`: `bpf_redirect` to another device's
//! egress keeps it (the skb is not scrubbed within a namespace), and no
//! routing decision looks at it on the way (the next hop comes from the
//! veth's own FIB lookup, see `fib::forward`). `skb->cb` belongs to the
//! qdisc layer and is only promised within one hook; Cilium, too, hands
//! such verdicts from one hook to another in the mark.
//! A sandbox cannot forge the mark: crossing into the host namespace clears
//! it. The mark is only borrowed when it is free (zero), and the uplink
//! gives it back as zero, so nothing after the uplink's egress sees it.
//!
//! IPv6 will use the same handoff: the mark carries a verdict, not an
//! address.
//!
//! The mark's layout (tag and reason) is `netpath_common::handoff`, shared
//! with the tests that read the marks these programs leave.
use aya_ebpf::programs::TcContext;
use netpath_common::{Reason, handoff as tag};

#[inline(always)]
fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the whole program run.
    unsafe { (*ctx.skb.skb).mark }
}

#[inline(always)]
fn set_mark(ctx: &TcContext, mark: u32) {
    // SAFETY: as above; TC programs may write `mark`.
    unsafe { (*ctx.skb.skb).mark = mark }
}

/// Whether the mark is free to carry a verdict.
#[inline(always)]
pub fn free(ctx: &TcContext) -> bool {
    mark(ctx) == 0
}

/// Hands `reason` (what the uplink's egress would have decided; the packet
/// is already as it must leave) to the uplink's egress. Only after `free`.
#[inline(always)]
pub fn give(ctx: &TcContext, reason: Reason) {
    set_mark(ctx, tag::mark(reason));
}

/// The verdict the veth handed over with this packet, if any; the mark is
/// given back. A mark of ours with a reason never handed over is cleared
/// and the packet judged afresh.
#[inline(always)]
pub fn take(ctx: &TcContext) -> Option<Reason> {
    let m = mark(ctx);
    if !tag::is_ours(m) {
        return None;
    }
    set_mark(ctx, 0);
    tag::reason(m)
}
