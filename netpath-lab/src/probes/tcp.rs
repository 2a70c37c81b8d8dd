//! TCP probes: a sink and a sender that prove a payload arrived intact
//! (length and SHA-256 at both ends), a server that counts connections and
//! their peers, and a client that churns short connections.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};

use super::{announce, hex, payload};

#[derive(Args, Debug)]
pub struct SinkArgs {
    #[arg(long)]
    port: u16,
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long)]
    to: SocketAddr,
    #[arg(long)]
    bytes: usize,
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Stay connected and silent this many seconds before sending (an idle
    /// established connection).
    #[arg(long, default_value_t = 0)]
    delay: u64,
    /// Spread the bytes evenly over this many seconds (a long transfer).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    port: u16,
    #[arg(long)]
    max: usize,
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct ChurnArgs {
    #[arg(long)]
    to: SocketAddr,
    #[arg(long)]
    count: usize,
}

/// Accepts one connection and reads it to EOF; prints peer, local
/// address, byte count and SHA-256 of what arrived.
pub fn sink(SinkArgs { port, timeout }: SinkArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    announce(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let (mut stream, peer) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e).context("no connection arrived"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let local = stream.local_addr()?;
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    println!(
        "{}",
        serde_json::json!({"peer": peer.to_string(), "local": local.to_string(), "bytes": total, "sha256": hex(&hasher.finalize())})
    );
    Ok(0)
}

/// Connects (retrying until TIMEOUT), sends BYTES of `payload` and shuts
/// down; prints local address, byte count and SHA-256 of what was sent.
pub fn send(SendArgs { to, bytes, timeout, delay, duration }: SendArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e).with_context(|| format!("connecting to {to}")),
        }
    };
    stream.set_write_timeout(Some(timeout))?;
    let data = payload(bytes);
    std::thread::sleep(Duration::from_secs(delay));
    if duration == 0 {
        stream.write_all(&data)?;
    } else {
        // Ten chunks a second, each sent on its own schedule.
        let ticks = (duration * 10) as usize;
        let start = Instant::now();
        for (i, chunk) in data.chunks(bytes.div_ceil(ticks).max(1)).enumerate() {
            stream.write_all(chunk)?;
            let next = start + Duration::from_millis(100 * (i as u64 + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let local = stream.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"local": local.to_string(), "bytes": bytes, "sha256": hex(&Sha256::digest(&data))})
    );
    Ok(0)
}

/// Accepts and drains connections until MAX or TIMEOUT; prints how many
/// and the peers' addresses.
pub fn serve(ServeArgs { port, max, timeout }: ServeArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    announce(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut served = 0usize;
    let mut peers = std::collections::BTreeSet::new();
    while served < max && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink);
                peers.insert(peer.ip().to_string());
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::json!({"served": served, "peers": peers}));
    Ok(0)
}

/// COUNT short connections one after another; prints successes and failures.
pub fn churn(ChurnArgs { to, count }: ChurnArgs) -> Result<i32> {
    let (mut ok, mut failed) = (0usize, 0usize);
    for _ in 0..count {
        let once = || -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"x")?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?;
            Ok(())
        };
        match once() {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!("{}", serde_json::json!({"ok": ok, "failed": failed}));
    Ok(0)
}
