//! Sandbox-to-sandbox forwarding on one network: the packet is handed
//! straight to the destination sandbox's interface with `bpf_redirect_peer`,
//! so it never crosses the bridge, its netfilter hooks or the host veth's TX.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_redirect_peer,
    programs::TcContext,
};
use netpath_common::{EndpointKey, Program};

use crate::{
    maps::ENDPOINTS,
    packet::{L3, parse},
    stats::count,
};

const TC_ACT_REDIRECT: i32 = 7;
const PROGRAM: Program = Program::FromContainer;

#[inline(always)]
pub fn from_container(ctx: &TcContext) -> i32 {
    let (eth, ip) = match parse(ctx) {
        L3::Ipv4(eth, ip) => (eth, ip),
        L3::NotIpv4 => {
            count(PROGRAM, |c| c.passed_not_ipv4 += 1);
            return TC_ACT_OK;
        }
        L3::Malformed => {
            count(PROGRAM, |c| c.dropped_malformed += 1);
            return TC_ACT_SHOT;
        }
    };
    // SAFETY: lookups return pointers into the map that stay valid for the
    // rest of this run of the program.
    let Some(dst) = (unsafe { ENDPOINTS.get(EndpointKey { ipv4: ip.daddr }) }) else {
        count(PROGRAM, |c| c.passed_no_endpoint += 1);
        return TC_ACT_OK;
    };
    // The source must be the sandbox behind this very veth, so that a
    // sandbox cannot borrow another's address to reach past its network.
    let src = unsafe { ENDPOINTS.get(EndpointKey { ipv4: ip.saddr }) };
    let Some(src) = src.filter(|src| src.host_ifindex == ingress_ifindex(ctx)) else {
        count(PROGRAM, |c| c.passed_unknown_source += 1);
        return TC_ACT_OK;
    };
    if src.network_id != dst.network_id {
        count(PROGRAM, |c| c.passed_other_network += 1);
        return TC_ACT_OK;
    }
    let (ifindex, mac) = (dst.host_ifindex, dst.mac);
    eth.dst = mac;
    let len = u64::from(ctx.len());
    // SAFETY: plain helper call with scalar arguments.
    let verdict = unsafe { bpf_redirect_peer(ifindex, 0) } as i32;
    if verdict == TC_ACT_REDIRECT {
        count(PROGRAM, |c| {
            c.forwarded_packets += 1;
            c.forwarded_bytes += len;
        });
    } else {
        count(PROGRAM, |c| c.dropped_redirect_failed += 1);
    }
    verdict
}

#[inline(always)]
fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the whole program run.
    unsafe { (*ctx.skb.skb).ifindex }
}
