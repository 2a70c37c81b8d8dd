use netpath_common::{Counters, Program};

use crate::maps::STATS;

/// Bumps one outcome counter of `program` on the current CPU.
#[inline(always)]
pub fn count(program: Program, bump: impl FnOnce(&mut Counters)) {
    if let Some(counters) = STATS.get_ptr_mut(program as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        bump(unsafe { &mut *counters });
    }
}
