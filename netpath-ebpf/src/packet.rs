//! Bounds-checked views into the packet, the only way the programs read it.
use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto_be: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len_be: u16,
    pub id_be: u16,
    pub frag_off_be: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// A pointer to a `T` at `offset`, or `None` when the packet is shorter.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

pub enum L3<'a> {
    Ipv4(&'a mut EthHdr, &'a Ipv4Hdr),
    NotIpv4,
    Malformed,
}

/// Parses Ethernet and, for IPv4, the fixed part of the IP header.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> L3<'_> {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return L3::Malformed;
    };
    // SAFETY: ptr_at checked that the header lies within the packet.
    let eth = unsafe { &mut *eth };
    if u16::from_be(eth.proto_be) != ETH_P_IP {
        return L3::NotIpv4;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return L3::Malformed;
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    if ip.version_ihl >> 4 != 4 || ip.version_ihl & 0x0f < 5 {
        return L3::Malformed;
    }
    L3::Ipv4(eth, ip)
}
