//! The single exit of every entry program: the verdict's reason is counted
//! (packets and bytes, per CPU) and its action handed to the kernel.
use netpath_common::{Program, Reason, stats_slot};

use crate::{conntrack::Refused, ctx::Ctx, maps::STATS};

/// What a program decided about a packet: why, and what the kernel should
/// do with it.
#[derive(Clone, Copy)]
pub struct Verdict<A> {
    pub reason: Reason,
    pub action: A,
}

impl<A> Verdict<A> {
    #[inline(always)]
    pub const fn new(reason: Reason, action: A) -> Self {
        Verdict { reason, action }
    }
}

#[inline(always)]
pub fn pass<C: Ctx>(reason: Reason) -> Verdict<C::Action> {
    Verdict::new(reason, C::PASS)
}

#[inline(always)]
pub fn drop<C: Ctx>(reason: Reason) -> Verdict<C::Action> {
    Verdict::new(reason, C::DROP)
}

/// The TC programs' verdicts, spelled once for the two TC entry programs.
pub mod tc {
    use aya_ebpf::programs::TcContext;
    use netpath_common::Reason;

    /// A TC program's verdict (its action is a `TC_ACT_*` code).
    pub type V = super::Verdict<i32>;

    #[inline(always)]
    pub fn pass(reason: Reason) -> V {
        super::pass::<TcContext>(reason)
    }

    #[inline(always)]
    pub fn drop(reason: Reason) -> V {
        super::drop::<TcContext>(reason)
    }
}

/// Why a new connection was refused; the packet is dropped.
#[inline(always)]
pub fn refused<C: Ctx>(why: Refused) -> Verdict<C::Action> {
    drop::<C>(match why {
        Refused::Full => Reason::DropConntrackFull,
        Refused::PortsExhausted => Reason::DropNatPortsExhausted,
        Refused::NotSyn => Reason::DropCtNotSyn,
        Refused::LaterFragment => Reason::DropFragNoFirst,
    })
}

/// Counts `verdict` under `program` and returns its action.
#[inline(always)]
pub fn exit<C: Ctx>(ctx: &C, program: Program, verdict: Verdict<C::Action>) -> C::Action {
    count(program, verdict.reason, u64::from(ctx.len()));
    #[cfg(feature = "upgrade-probe")]
    count_slot(program as u32 * netpath_common::REASON_SLOTS as u32 + netpath_common::UPGRADE_PROBE_SLOT as u32, 0);
    verdict.action
}

/// Counts one event of `reason` (socket programs, which have no packet).
#[inline(always)]
pub fn count(program: Program, reason: Reason, bytes: u64) {
    count_slot(stats_slot(program, reason), bytes)
}

#[inline(always)]
fn count_slot(index: u32, bytes: u64) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += bytes;
        }
    }
}
