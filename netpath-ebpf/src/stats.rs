use aya_ebpf::bindings::TC_ACT_SHOT;
use netpath_common::{Counters, Program};

use crate::conntrack::Refused;

use crate::maps::STATS;

/// Bumps one outcome counter of `program` on the current CPU.
#[inline(always)]
pub fn count(program: Program, bump: impl FnOnce(&mut Counters)) {
    if let Some(counters) = STATS.get_ptr_mut(program as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        bump(unsafe { &mut *counters });
    }
}

/// Counts why a new connection was refused; the packet is dropped.
#[inline(always)]
pub fn refused(program: Program, why: Refused) -> i32 {
    match why {
        Refused::Full => count(program, |c| c.dropped_conntrack_full += 1),
        Refused::PortsExhausted => count(program, |c| c.dropped_nat_port_exhausted += 1),
    }
    TC_ACT_SHOT
}
