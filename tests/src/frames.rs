//! Hand-made frames for the lab tests: built here byte by byte and sent from
//! the test process itself, on an `AF_PACKET` socket opened by a thread that
//! entered the sandbox's network namespace, so a test can forge exactly what
//! a hostile sandbox could (another address, another MAC, a lying ARP).
//! Sockets bound the same way stay in that namespace: they are the victims'
//! ears.
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsFd,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

pub type Mac = [u8; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const BROADCAST: Mac = [0xff; 6];

/// Runs `f` on a thread that entered the network namespace at `ns`.
pub fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = File::open(ns).with_context(|| format!("opening netns {}", ns.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("netns thread panicked"))?
    })
}

fn ifindex(ifname: &str) -> Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: plain libc call on a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname}");
    }
    Ok(index)
}

/// Sends `frames` as they are out of `ifname` in `ns`; returns how many
/// the kernel took whole.
pub fn send(ns: &Path, ifname: &str, frames: &[Vec<u8>]) -> Result<usize> {
    in_netns(ns, || {
        let index = ifindex(ifname)?;
        // SAFETY: plain libc calls on a socket this function owns and closes;
        // the address struct is zeroed and filled before use.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            let mut sent = 0;
            for frame in frames {
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
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
            Ok(sent)
        }
    })
}

/// The MAC address of `ifname` in `ns`, as `ip link` shows it.
pub fn mac_of(ns: &Path, ifname: &str) -> Result<Mac> {
    let out = in_netns(ns, || {
        // A child forked by this thread starts in the thread's namespace.
        Ok(std::process::Command::new("ip").args(["-j", "link", "show", "dev", ifname]).output()?)
    })?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j link")?;
    parse_mac(links[0]["address"].as_str().context("no address")?)
}

pub fn parse_mac(s: &str) -> Result<Mac> {
    let bytes: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
    bytes.try_into().map_err(|_| anyhow!("not a MAC: {s}"))
}

/// A UDP socket bound to `addr` inside `ns` (it stays there), reading with
/// a timeout so a test waits for what must arrive without hanging.
pub fn udp_socket(ns: &Path, addr: SocketAddrV4) -> Result<UdpSocket> {
    let sock = in_netns(ns, || Ok(UdpSocket::bind(addr)?))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(sock)
}

/// Everything `sock` received up to and including the datagram `sentinel`
/// (sent by the test after the frames under test, on a path that delivers),
/// then whatever else is already queued: (source, payload) in arrival order.
pub fn received_until(sock: &UdpSocket, sentinel: &[u8]) -> Result<Vec<(SocketAddrV4, Vec<u8>)>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).context("waiting for the sentinel datagram")?;
        let std::net::SocketAddr::V4(from) = from else { continue };
        got.push((from, buf[..n].to_vec()));
        if &buf[..n] == sentinel {
            break;
        }
    }
    sock.set_nonblocking(true)?;
    while let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
        got.push((from, buf[..n].to_vec()));
    }
    sock.set_nonblocking(false)?;
    Ok(got)
}

pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (no options) for `payload_len` bytes of `proto`.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, payload_len: usize) -> Vec<u8> {
    let total = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// A complete Ethernet + IPv4 + UDP frame with correct checksums.
pub fn udp(dst_mac: Mac, src_mac: Mac, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    ethernet(dst_mac, src_mac, ETH_P_IP, &udp_packet(src, dst, payload))
}

/// ARP for IPv4 over Ethernet; the Ethernet source is `sha` unless a test
/// forges that separately.
pub fn arp(eth_dst: Mac, eth_src: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    ethernet(eth_dst, eth_src, ETH_P_ARP, &a)
}

/// An IPv6 frame (an all-nodes ICMPv6 echo request from a link-local
/// address); its content does not matter to a data path without IPv6.
pub fn ipv6(src_mac: Mac) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 255];
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    ethernet([0x33, 0x33, 0, 0, 0, 1], src_mac, ETH_P_IPV6, &p)
}

/// IPv4 frames a data path must refuse as malformed, each with a correct
/// Ethernet header: header length below the minimum, header length past
/// the packet, IP header cut short, TCP and UDP headers cut short.
pub fn malformed(dst_mac: Mac, src_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    let with_ihl = |ihl_byte: u8, proto: u8, l4: &[u8]| {
        let mut h = ipv4_header(src, dst, proto, 64, l4.len());
        h[0] = ihl_byte;
        h.extend_from_slice(l4);
        ethernet(dst_mac, src_mac, ETH_P_IP, &h)
    };
    vec![
        with_ihl(0x43, 6, &[0; 20]),
        with_ihl(0x4f, 17, &[0; 8]),
        ethernet(dst_mac, src_mac, ETH_P_IP, &[0x45, 0, 0, 20, 0, 0]),
        with_ihl(0x45, 6, &[0x12, 0x34, 0x00, 0x50]),
        with_ihl(0x45, 17, &[0x12]),
    ]
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// An IPv4 + UDP packet (no Ethernet header) with correct checksums.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::with_capacity(len as usize);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let pseudo = [&src.ip().octets()[..], &dst.ip().octets()[..], &[0, 17], &len.to_be_bytes()[..]].concat();
    let mut c = checksum(&[&pseudo, &u]);
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let mut packet = ipv4_header(*src.ip(), *dst.ip(), 17, 64, u.len());
    packet.extend_from_slice(&u);
    packet
}

/// A TCP segment without options or payload, with correct checksums.
pub fn tcp(dst_mac: Mac, src_mac: Mac, src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    let ack: u32 = if flags & TCP_ACK != 0 { 1 } else { 0 };
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    let pseudo = [&src.ip().octets()[..], &dst.ip().octets()[..], &[0, 6], &20u16.to_be_bytes()[..]].concat();
    let c = checksum(&[&pseudo, &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut packet = ipv4_header(*src.ip(), *dst.ip(), 6, 64, t.len());
    packet.extend_from_slice(&t);
    ethernet(dst_mac, src_mac, ETH_P_IP, &packet)
}

/// An ICMP error (`icmp_type`, `code`) from `src` to `dst` quoting the IPv4
/// header and first 8 transport bytes of `quoted` (an IPv4 packet).
pub fn icmp_error(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let mut i = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(&quoted[..quoted.len().min(28)]);
    let c = checksum(&[&i]);
    i[2..4].copy_from_slice(&c.to_be_bytes());
    let mut packet = ipv4_header(src, dst, 1, 64, i.len());
    packet.extend_from_slice(&i);
    ethernet(dst_mac, src_mac, ETH_P_IP, &packet)
}

/// A later fragment (offset in 8-byte units above zero) of datagram `id`
/// of `proto`: no transport header, only `data`.
#[allow(clippy::too_many_arguments)]
pub fn later_fragment(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    offset_units: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut h = ipv4_header(src, dst, proto, 64, data.len());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&(offset_units & 0x1fff).to_be_bytes());
    h[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(data);
    ethernet(dst_mac, src_mac, ETH_P_IP, &h)
}

/// An `AF_PACKET` socket in `ns` that sees every frame on `ifname`: the
/// test's capture of what crossed a wire.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    pub fn open(ns: &Path, ifname: &str) -> Result<Capture> {
        use std::os::fd::FromRawFd;
        in_netns(ns, || {
            let index = ifindex(ifname)?;
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain libc calls; the fd is owned from here on.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all));
                if fd < 0 {
                    return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
                }
                let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = all;
                addr.sll_ifindex = index as i32;
                let size = 8 << 20;
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const i32).cast(),
                    4,
                );
                let rc = libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if rc != 0 {
                    return Err(std::io::Error::last_os_error()).context("binding the capture");
                }
                Ok(Capture { fd })
            }
        })
    }

    /// The IPv4 packets captured so far (from their IP header on).
    pub fn ipv4(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: reading into a buffer this function owns.
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            let f = &buf[..n as usize];
            if f.len() >= 34 && u16::from_be_bytes([f[12], f[13]]) == ETH_P_IP {
                out.push(f[14..].to_vec());
            }
        }
        out
    }
}

/// Source and destination addresses of an IPv4 packet.
pub fn ipv4_addrs(packet: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    let a = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
    (a(12), a(16))
}
