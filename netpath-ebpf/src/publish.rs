//! Published ports: one hash entry per single port, one array slot per range.
use core::ffi::c_void;

use netpath_common::{FlowKey, MAX_PUBLISHED_RANGES, PublishedKey, PublishedTarget};

use crate::{
    maps::{PUBLISHED, PUBLISHED_RANGES, UPLINKS},
    route,
};

/// Where a connection arriving on uplink `ifindex` as `key` should go: a
/// published port of the uplink's address or of another address of this
/// host. `ctx` is the program's context, for the FIB.
#[inline(always)]
pub fn arriving(ctx: *mut c_void, ifindex: u32, key: &FlowKey, range_count: u32) -> Option<PublishedTarget> {
    let target = find(key, range_count)?;
    // SAFETY: value copied out immediately.
    let uplink_addr = unsafe { UPLINKS.get(ifindex) }.map(|u| u.addr);
    (uplink_addr == Some(key.daddr) || route::is_local(ctx, ifindex, key.saddr, key.daddr)).then_some(target)
}

/// Where a connection to `key.daddr:key.dport` should go, if published. A
/// mapping bound to one host address wins over one bound to all.
#[inline(always)]
pub fn find(key: &FlowKey, range_count: u32) -> Option<PublishedTarget> {
    let mut pk = PublishedKey { host_addr: key.daddr, host_port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: values are copied out immediately.
    if let Some(t) = unsafe { PUBLISHED.get(pk) } {
        return Some(*t);
    }
    pk.host_addr = [0; 4];
    if let Some(t) = unsafe { PUBLISHED.get(pk) } {
        return Some(*t);
    }
    let target = find_range(key, range_count);
    (target.port != 0).then_some(target)
}

/// The matching range's target, or an all-zero target. (A plain value
/// rather than an `Option`: the verifier rejects copying the uninitialised
/// payload of a `None`.)
#[inline(always)]
fn find_range(key: &FlowKey, range_count: u32) -> PublishedTarget {
    let mut best = PublishedTarget::default();
    for i in 0..MAX_PUBLISHED_RANGES as u32 {
        if i >= range_count {
            break;
        }
        let Some(r) = PUBLISHED_RANGES.get(i) else { break };
        if r.proto != key.proto || key.dport < r.host_first || key.dport > r.host_last {
            continue;
        }
        let target =
            PublishedTarget { addr: r.target_addr, port: r.target_first + (key.dport - r.host_first), _pad: 0 };
        if r.host_addr == key.daddr {
            return target;
        }
        if r.host_addr == [0; 4] {
            best = target;
        }
    }
    best
}
