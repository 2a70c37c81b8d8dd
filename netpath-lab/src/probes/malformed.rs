//! Hand-made broken IPv4 frames, sent out of a sandbox's interface through
//! a raw socket: what a data path must drop without tripping over.
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::fixture::OUTSIDE_IP;

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// Source address written into the frames (the sandbox's own, so the
    /// data path takes them as the sandbox's).
    #[arg(long)]
    src: Ipv4Addr,
}

/// Frames a data path must survive: an IPv4 header length below the
/// minimum, a header cut short, and transport headers cut short.
pub fn frames(src: Ipv4Addr) -> Vec<Vec<u8>> {
    let eth = |payload: &[u8]| -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    };
    let ip = |ihl_byte: u8, proto: u8, l4: &[u8]| -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut h = vec![ihl_byte, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&OUTSIDE_IP.octets());
        h.extend_from_slice(l4);
        h
    };
    vec![
        eth(&ip(0x43, 6, &[0; 20])),
        eth(&[0x45, 0, 0, 20, 0, 0]),
        eth(&ip(0x45, 6, &[0x12, 0x34, 0x00, 0x50])),
        eth(&ip(0x45, 17, &[0x12])),
        eth(&ip(0x4f, 17, &[0; 8])),
    ]
}

/// Sends every frame of `frames` out of IFACE; prints how many went out.
pub fn send(SendArgs { iface, src }: SendArgs) -> Result<i32> {
    let name = std::ffi::CString::new(iface.as_str())?;
    // SAFETY: plain libc calls on a socket we own; the address struct is
    // zeroed and filled before use.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            bail!("no interface {iface}");
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("raw socket");
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let mut sent = 0;
        for frame in frames(src) {
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if n == frame.len() as isize {
                sent += 1;
            }
        }
        libc::close(fd);
        println!("{}", serde_json::json!({ "sent": sent }));
    }
    Ok(0)
}
