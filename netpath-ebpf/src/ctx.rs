//! The context layer: one interface over a TC socket buffer and an XDP
//! frame, so parsing, conntrack and header rewriting are written once and
//! serve both hooks (as Cilium's `ctx/skb.h` and `ctx/xdp.h` do).
//!
//! TC writes through the kernel's helpers: a direct packet write anywhere in
//! a TC program makes the kernel unclone every skb it sees (TCP's are
//! clones), and the checksum helpers keep the skb's checksum state right.
//! XDP has neither concern, nor checksum helpers: it reads and writes the
//! frame directly and updates checksums in software (`netpath_common::csum`);
//! `bpf_xdp_load_bytes`/`store_bytes` would do too, but measured 680 ns per
//! published-port frame against about 200 ns direct. Every header access of
//! the shared code is 16 bits or wider: for one byte, `data + off + 1 >
//! data_end` compiles to `data + off >= data_end`, from which the verifier
//! grants no readable range when `off` varies (it does behind a
//! variable-length IP header).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    programs::{TcContext, XdpContext},
};
use core::ffi::c_void;
use netpath_common::csum;

pub type Result = core::result::Result<(), ()>;

pub trait Ctx {
    /// What the program returns to the kernel.
    type Action: Copy + PartialEq;
    /// Continue through the kernel's own path.
    const PASS: Self::Action;
    const DROP: Self::Action;

    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Length of the whole packet.
    fn len(&self) -> u32;
    /// The program's context pointer, for helpers that take it.
    fn raw(&self) -> *mut c_void;
    /// The interface the program runs on (TC: ingress or egress; XDP: the
    /// receiving one).
    fn ifindex(&self) -> u32;
    /// Reads a `T` at `off`, wherever the packet keeps it.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result;
    /// Updates the checksum at `off` for a `size`-byte field (2 or 4) that
    /// changed from `from` to `to` (each as it lies in memory).
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result;
    /// The same for a transport checksum; `flags` as for
    /// `bpf_l4_csum_replace` (size in the low bits, `BPF_F_MARK_MANGLED_0`
    /// for UDP's "zero means none", `BPF_F_PSEUDO_HDR`).
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result;

    /// A pointer to a `T` at `off` in the directly accessible part, or
    /// `None` when the packet is shorter.
    #[inline(always)]
    fn ptr_at<T>(&self, off: usize) -> Option<*mut T> {
        let start = self.data();
        if start + off + core::mem::size_of::<T>() > self.data_end() {
            return None;
        }
        Some((start + off) as *mut T)
    }
}

impl Ctx for TcContext {
    type Action = i32;
    const PASS: i32 = TC_ACT_OK;
    const DROP: i32 = TC_ACT_SHOT;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.skb.skb.cast()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the whole program run.
        unsafe { (*self.skb.skb).ifindex }
    }
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        // bpf_skb_load_bytes: also reaches headers outside the linear part.
        TcContext::load(self, off).ok()
    }
    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result {
        TcContext::store(self, off, v, 0).map_err(|_| ())
    }
    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result {
        TcContext::l3_csum_replace(self, off, from, to, size).map_err(|_| ())
    }
    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result {
        TcContext::l4_csum_replace(self, off, from, to, flags).map_err(|_| ())
    }
}

/// The checksum `check` after a `size`-byte field changed from `from` to `to`.
#[inline(always)]
fn replaced(check: u16, from: u64, to: u64, size: u64) -> u16 {
    if size == 4 {
        csum::replace_addr(check, (from as u32).to_ne_bytes(), (to as u32).to_ne_bytes())
    } else {
        csum::replace16(check, from as u16, to as u16)
    }
}

impl Ctx for XdpContext {
    type Action = u32;
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.ctx.cast()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the whole program run.
        unsafe { (*self.ctx).ingress_ifindex }
    }
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let p = self.ptr_at::<T>(off)?;
        // SAFETY: ptr_at checked the bytes lie within the frame.
        Some(unsafe { core::ptr::read_unaligned(p) })
    }
    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result {
        let p = self.ptr_at::<T>(off).ok_or(())?;
        // SAFETY: as above.
        unsafe { core::ptr::write_unaligned(p, *v) };
        Ok(())
    }
    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u64, to: u64, size: u64) -> Result {
        let check: u16 = self.load(off).ok_or(())?;
        self.store(off, &replaced(check, from, to, size))
    }
    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u64, to: u64, flags: u64) -> Result {
        let check: u16 = self.load(off).ok_or(())?;
        let zero_means_none = flags & BPF_F_MARK_MANGLED_0 as u64 != 0;
        // A UDP checksum of zero means "none" and stays so; a computed zero
        // is sent as all ones.
        if zero_means_none && check == 0 {
            return Ok(());
        }
        let mut new = replaced(check, from, to, flags & 0xf);
        if zero_means_none && new == 0 {
            new = 0xffff;
        }
        self.store(off, &new)
    }
}
