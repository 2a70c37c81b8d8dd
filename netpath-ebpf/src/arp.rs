//! ARP for sandboxes on other hosts, answered here (as Cilium's `arp.h`):
//! a sandbox's request for an address of its overlay network that lives on
//! another host becomes the reply in place and goes straight back out of
//! the sandbox's own veth. Nothing crosses the tunnel for it and no
//! neighbour or FDB entry is programmed anywhere.
use aya_ebpf::{helpers::generated::bpf_redirect, programs::TcContext};
use netpath_common::Reason;

use crate::{
    ctx::Ctx,
    packet::{ArpHdr, ETH_P_ARP, ETH_P_IP, EthHdr},
    route::TC_ACT_REDIRECT,
    stats::{
        Verdict,
        tc::{V, drop},
    },
};

const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;

/// An ARP request as the sandbox sent it (already checked to speak for the
/// sandbox itself).
pub struct Request {
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tpa: [u8; 4],
}

/// The request `a` is, if it is one (`a` already checked to be ARP for
/// IPv4 over Ethernet: `packet::arp_ipv4`, the header's one read).
#[inline(always)]
pub fn request(a: &ArpHdr) -> Option<Request> {
    if u16::from_be(a.op_be) != ARPOP_REQUEST {
        return None;
    }
    Some(Request { sha: a.sha, spa: a.spa, tpa: a.tpa })
}

/// The whole reply frame, written in one store.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct ReplyFrame {
    eth: EthHdr,
    arp: ArpHdr,
}

/// Turns `req` into the answer "`req.tpa` is at `mac`" and sends it back
/// to the asking sandbox through the egress of the veth it came in on.
#[inline(always)]
pub fn reply(ctx: &TcContext, req: &Request, mac: &[u8; 6]) -> V {
    let frame = ReplyFrame {
        eth: EthHdr { dst: req.sha, src: *mac, proto_be: ETH_P_ARP.to_be() },
        arp: ArpHdr {
            htype_be: 1u16.to_be(),
            ptype_be: ETH_P_IP.to_be(),
            hlen: 6,
            plen: 4,
            op_be: ARPOP_REPLY.to_be(),
            sha: *mac,
            spa: req.tpa,
            tha: req.sha,
            tpa: req.spa,
        },
    };
    if Ctx::store(ctx, 0, &frame).is_err() {
        return drop(Reason::DropWriteFailed);
    }
    // SAFETY: plain helper call with scalar arguments.
    let action = unsafe { bpf_redirect(Ctx::ifindex(ctx), 0) } as i32;
    if action == TC_ACT_REDIRECT { Verdict::new(Reason::ArpReplied, action) } else { drop(Reason::DropRedirectFailed) }
}
