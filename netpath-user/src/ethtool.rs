//! The two interface settings XDP redirection into veth needs, through the
//! ethtool ioctl (no netlink family for them in our dependencies).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn set(ifname: &str, cmd: u32, on: bool) -> Result<()> {
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        bail!("interface name {ifname:?} is too long");
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let mut value = EthtoolValue { cmd, data: u32::from(on) };
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for ethtool");
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifr and the value it points to outlive the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("ethtool command {cmd:#x} on {ifname}"));
    }
    Ok(())
}

/// GRO on a veth gives it the NAPI queue that frames redirected by XDP to
/// its peer arrive on; without one they are dropped.
pub fn set_gro(ifname: &str, on: bool) -> Result<()> {
    set(ifname, ETHTOOL_SGRO, on)
}

/// A veth sender with TX checksum offload hands over partial checksums,
/// which XDP redirection loses; a real wire carries complete ones.
pub fn set_tx_checksum(ifname: &str, on: bool) -> Result<()> {
    set(ifname, ETHTOOL_STXCSUM, on)
}
