//! The lab's wire: UDP frames handed to the uplink the way a NIC hands them
//! over, as bare buffers with no socket buffer and no sender stack behind
//! them. The `lab-wire` XDP program (crate netpath-lab-ebpf) runs through
//! `BPF_PROG_TEST_RUN` in live-frames mode on the outside end of the uplink
//! veth and transmits each frame through it, so the host side receives XDP
//! frames: what XDP on a real NIC sees, and what the kernel turns into
//! socket buffers for TC.
//! The receiving veth needs a NAPI queue (an XDP program or GRO on it).
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{
    EbpfLoader,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use clap::Args;
use netpath::link::Rtnl;
use serde::Serialize;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-wire"));

const HEADER_LEN: usize = 42;
/// Frames the kernel sends per batch before flushing the redirect queues.
const BATCH: u32 = 64;

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long)]
    to: SocketAddrV4,
    #[arg(long, default_value = "eth0")]
    dev: String,
    #[arg(long, default_value_t = 40000)]
    sport: u16,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long)]
    count: u32,
}

/// `netpath-lab wire-send`: prints frames sent and seconds taken.
pub fn send(SendArgs { to, dev, sport, size, count }: SendArgs) -> Result<i32> {
    let sent = send_udp(&dev, to, sport, size, count)?;
    println!("{}", serde_json::to_string(&sent)?);
    Ok(0)
}

#[derive(Debug, Serialize)]
pub struct Sent {
    pub frames: u64,
    pub seconds: f64,
}

/// An Ethernet/IPv4/UDP frame with `payload_len` bytes of payload and valid
/// checksums.
pub fn udp_frame(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload_len: usize,
) -> Result<Vec<u8>> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
    let builder = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port());
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, &payload).context("building the frame")?;
    Ok(frame)
}

/// Sends `count` copies of a UDP frame to `to` out of `dev` of this network
/// namespace; the source is `dev`'s address, the destination MAC that of the
/// neighbour the kernel resolves for `to`. Call from a thread or process
/// that lives in the namespace.
pub fn send_udp(dev: &str, to: SocketAddrV4, sport: u16, payload_len: usize, count: u32) -> Result<Sent> {
    let rtnl = Rtnl::new()?;
    let index = rtnl.require_index(dev)?;
    let src_ip =
        rtnl.ipv4_addresses(index)?.first().map(|(a, _)| *a).with_context(|| format!("{dev} has no address"))?;
    let src_mac = rtnl.mac(dev)?;
    let dst_mac = resolve_next_hop(&rtnl, (dev, index), to)?;
    let frame = udp_frame((src_mac, dst_mac), SocketAddrV4::new(src_ip, sport), to, payload_len)?;
    let header: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into()?;

    let mut ebpf =
        EbpfLoader::new().override_global("HEADER", &header, true).load(OBJECT).context("loading lab-wire")?;
    let prog: &mut Xdp = ebpf.program_mut("lab_wire").context("object lacks lab_wire")?.try_into()?;
    prog.load().context("verifier rejected lab_wire")?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    // The kernel wants data_end equal to the frame's length (no metadata).
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&index.to_ne_bytes());
    let opts = TestRunOptions {
        data_in: Some(&frame),
        ctx_in: Some(&ctx),
        repeat: count,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
        ..TestRunOptions::new()
    };
    let started = Instant::now();
    prog.test_run(opts).context("BPF_PROG_TEST_RUN (live frames)")?;
    Ok(Sent { frames: u64::from(count), seconds: started.elapsed().as_secs_f64() })
}

/// The MAC of the next hop towards `to` on `dev`: one ordinary datagram
/// makes the kernel resolve it, then the neighbour table answers.
fn resolve_next_hop(rtnl: &Rtnl, (dev, index): (&str, u32), to: SocketAddrV4) -> Result<[u8; 6]> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.send_to(b"resolve", to).with_context(|| format!("sending to {to}"))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some((_, mac)) = rtnl.neighbours(index)?.first() {
            return Ok(*mac);
        }
        if Instant::now() > deadline {
            bail!("no neighbour resolved on {dev} towards {to}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
