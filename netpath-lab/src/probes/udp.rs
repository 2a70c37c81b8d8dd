//! UDP probes: a sink that counts and hashes what arrived and from whom, a
//! paced sender, an echo server, and a one-shot question that reports which
//! address the answer came from.
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use sha2::{Digest, Sha256};

use super::{announce, hex, payload};

#[derive(Args, Debug)]
pub struct SinkArgs {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    count: usize,
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long)]
    to: SocketAddr,
    #[arg(long)]
    count: usize,
    #[arg(long, default_value_t = 512)]
    size: usize,
}

#[derive(Args, Debug)]
pub struct EchoArgs {
    #[arg(long)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct AskArgs {
    #[arg(long)]
    to: SocketAddr,
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Connect the socket first, so that ICMP errors come back as errors.
    #[arg(long)]
    connected: bool,
}

/// Receives up to COUNT datagrams until TIMEOUT; prints peers, count and
/// the SHA-256 of what arrived.
pub fn sink(SinkArgs { port, count, timeout }: SinkArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    // Room for a burst at wire speed (wire-send): counting each datagram
    // here is slower than the data path delivers them.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))?;
    announce(sock.local_addr()?);
    let deadline = Instant::now() + timeout;
    let mut peers = std::collections::BTreeSet::new();
    let mut received = 0usize;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 65536];
    while received < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                peers.insert(peer.to_string());
                hasher.update(&buf[..n]);
                received += 1;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::json!({"peers": peers, "datagrams": received, "sha256": hex(&hasher.finalize())}));
    Ok(0)
}

/// Sends COUNT datagrams of SIZE bytes, paced; prints local address and count.
pub fn send(SendArgs { to, count, size }: SendArgs) -> Result<i32> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.connect(to)?;
    let data = payload(size);
    for _ in 0..count {
        sock.send(&data)?;
        // Paced so that a bounded burst never overruns the receiver's buffer.
        std::thread::sleep(Duration::from_micros(200));
    }
    println!("{}", serde_json::json!({"local": sock.local_addr()?.to_string(), "datagrams": count}));
    Ok(0)
}

/// Answers up to COUNT datagrams with the same bytes; prints the peers.
pub fn echo(EchoArgs { port, count, timeout }: EchoArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    announce(sock.local_addr()?);
    sock.set_read_timeout(Some(timeout))?;
    let mut peers = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..count {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { break };
        sock.send_to(&buf[..n], peer)?;
        peers.push(peer.to_string());
    }
    println!("{}", serde_json::json!({"peers": peers}));
    Ok(0)
}

/// One datagram and its answer; prints where the answer came from (exit 1
/// and the error when none came).
pub fn ask(AskArgs { to, timeout, connected }: AskArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.set_read_timeout(Some(timeout))?;
    let question = payload(64);
    if connected {
        sock.connect(to)?;
        sock.send(&question)?;
    } else {
        sock.send_to(&question, to)?;
    }
    let mut buf = [0u8; 256];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => {
            println!("{}", serde_json::json!({"from": from.to_string(), "echoed": buf[..n] == question[..]}));
            Ok(0)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"error": e.kind().to_string(), "refused": e.kind() == std::io::ErrorKind::ConnectionRefused})
            );
            Ok(1)
        }
    }
}
