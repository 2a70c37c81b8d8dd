//! The bench's own traffic endpoints, run as `netpath lab rr-serve`,
//! `rr-client` and `conn-rate` inside the namespaces under test: request /
//! response latency and new-connection rate, measured at the client.
//! Every loop is bounded by a deadline and a count.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// Echo server: TCP (a thread per connection, echoing until EOF) or UDP
/// (each datagram answered), until `timeout` passes.
pub fn rr_serve(port: u16, proto: Proto, timeout: Duration) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    match proto {
        Proto::Tcp => {
            let listener = TcpListener::bind(("0.0.0.0", port))?;
            crate::lab::announce(listener.local_addr()?);
            listener.set_nonblocking(true)?;
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || echo(stream));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(100))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        Proto::Udp => {
            let sock = UdpSocket::bind(("0.0.0.0", port))?;
            crate::lab::announce(sock.local_addr()?);
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut buf = vec![0u8; 65536];
            while Instant::now() < deadline {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        }
    }
    Ok(0)
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
}

/// Latency percentiles of a sample, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

pub fn percentiles(mut ns: Vec<u64>) -> Percentiles {
    if ns.is_empty() {
        return Percentiles::default();
    }
    ns.sort_unstable();
    let at = |q: f64| ns[(((ns.len() - 1) as f64) * q).round() as usize] as f64 / 1000.0;
    Percentiles {
        count: ns.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        mean_us: ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RrReport {
    pub latency: Percentiles,
    pub lost: usize,
    pub per_s: f64,
}

/// One request of `size` bytes and its echo, back to back, over one TCP
/// connection or one connected UDP socket, for `duration` or `max` rounds.
pub fn rr_client(to: SocketAddr, proto: Proto, size: usize, duration: Duration, max: usize) -> Result<RrReport> {
    let request = crate::lab::payload(size);
    let mut answer = vec![0u8; size.max(1)];
    let mut samples = Vec::with_capacity(max.min(1 << 20));
    let mut lost = 0usize;
    let started;
    match proto {
        Proto::Tcp => {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).with_context(|| format!("{to}"))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            started = Instant::now();
            while samples.len() < max && started.elapsed() < duration {
                let t = Instant::now();
                s.write_all(&request)?;
                s.read_exact(&mut answer)?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
            let _ = s.shutdown(Shutdown::Write);
        }
        Proto::Udp => {
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            started = Instant::now();
            while samples.len() + lost < max && started.elapsed() < duration {
                let t = Instant::now();
                s.send(&request)?;
                match s.recv(&mut answer) {
                    Ok(_) => samples.push(t.elapsed().as_nanos() as u64),
                    Err(_) => lost += 1,
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if samples.is_empty() {
        bail!("no answer from {to}");
    }
    Ok(RrReport { per_s: samples.len() as f64 / elapsed, latency: percentiles(samples), lost })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnReport {
    pub ok: usize,
    pub failed: usize,
    pub per_s: f64,
    /// connect() alone (SYN to SYN-ACK handled).
    pub connect: Percentiles,
    /// connect, one byte there and back, close.
    pub transaction: Percentiles,
}

/// New connections one after another: connect, one byte echoed, close with
/// RST (SO_LINGER 0, so no TIME_WAIT exhausts the client's ports across
/// runs). Counts and times each.
pub fn conn_rate(to: SocketAddr, duration: Duration, max: usize) -> Result<ConnReport> {
    let mut connect = Vec::new();
    let mut txn = Vec::new();
    let mut failed = 0usize;
    let started = Instant::now();
    while connect.len() + failed < max && started.elapsed() < duration {
        let t = Instant::now();
        let once = || -> std::io::Result<(u64, u64)> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            let c = t.elapsed().as_nanos() as u64;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"x")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            set_linger_zero(&s);
            drop(s);
            Ok((c, t.elapsed().as_nanos() as u64))
        };
        match once() {
            Ok((c, x)) => {
                connect.push(c);
                txn.push(x);
            }
            Err(_) => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(ConnReport {
        ok: connect.len(),
        failed,
        per_s: connect.len() as f64 / elapsed,
        connect: percentiles(connect),
        transaction: percentiles(txn),
    })
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let p = percentiles((1..=100).map(|i| i * 1000).collect());
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_us, 51.0);
        assert_eq!(p.p99_us, 99.0);
    }

    #[test]
    fn loopback_round_trips_and_connections() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let server = std::thread::spawn(move || rr_serve(port, Proto::Tcp, Duration::from_secs(3)));
        std::thread::sleep(Duration::from_millis(100));
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let rr = rr_client(to, Proto::Tcp, 64, Duration::from_millis(200), 100).unwrap();
        assert_eq!(rr.latency.count, 100);
        let c = conn_rate(to, Duration::from_millis(200), 20).unwrap();
        assert_eq!(c.ok, 20);
        server.join().unwrap().unwrap();
    }
}
