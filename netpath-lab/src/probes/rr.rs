//! The bench's own traffic endpoints, run as `netpath-lab rr-serve`,
//! `rr-client` and `conn-rate` inside the namespaces under test: request /
//! response latency and new-connection rate, measured at the client.
//! Every loop is bounded by a deadline and a count.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    pub port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: Proto,
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    #[arg(long)]
    pub to: SocketAddr,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: Proto,
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    #[arg(long, default_value_t = 10_000_000)]
    pub max: usize,
}

#[derive(Args, Debug)]
pub struct ConnRateArgs {
    #[arg(long)]
    pub to: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    pub duration_ms: u64,
    #[arg(long, default_value_t = 1_000_000)]
    pub max: usize,
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
}

/// Echo server: TCP (a task per connection on a two-thread runtime, so a
/// new connection costs no thread creation and the connection-rate probe
/// measures the path, not the server; echoing until EOF) or UDP (each
/// datagram answered), until `timeout` passes.
pub fn serve(ServeArgs { port, proto, timeout }: ServeArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    let deadline = Instant::now() + timeout;
    match proto {
        Proto::Tcp => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
                super::announce(listener.local_addr()?);
                let accepting = async {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => drop(tokio::spawn(echo(stream))),
                            // Out of descriptors or the like: let connections close.
                            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                };
                let _ = tokio::time::timeout(timeout, accepting).await;
                anyhow::Ok(())
            })?;
        }
        Proto::Udp => {
            let sock = UdpSocket::bind(("0.0.0.0", port))?;
            super::announce(sock.local_addr()?);
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

async fn echo(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
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
pub fn client(ClientArgs { to, proto, size, duration_ms, max }: ClientArgs) -> Result<RrReport> {
    let duration = Duration::from_millis(duration_ms);
    let request = super::payload(size);
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
            // A first datagram lost to neighbour resolution does not end a short run.
            let going =
                |got: usize, lost: usize| got + lost < max && (started.elapsed() < duration || (got == 0 && lost < 3));
            while going(samples.len(), lost) {
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

/// New connections from `parallel` clients, each one after another:
/// connect, one byte echoed, close with RST (SO_LINGER 0, so no TIME_WAIT
/// exhausts the client's ports across runs). Counts and times each; stops
/// at `duration` or `max` in all.
pub fn conn_rate(ConnRateArgs { to, duration_ms, max, parallel }: ConnRateArgs) -> Result<ConnReport> {
    let duration = Duration::from_millis(duration_ms);
    let parallel = parallel.max(1);
    let started = Instant::now();
    let each = max.div_ceil(parallel);
    let workers: Vec<(Vec<u64>, Vec<u64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..parallel).map(|_| s.spawn(|| one_after_another(to, started + duration, each))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut connect, mut txn, mut failed) = (Vec::new(), Vec::new(), 0);
    for (c, t, f) in workers {
        connect.extend(c);
        txn.extend(t);
        failed += f;
    }
    Ok(ConnReport {
        ok: connect.len(),
        failed,
        per_s: connect.len() as f64 / elapsed,
        connect: percentiles(connect),
        transaction: percentiles(txn),
    })
}

/// One client's loop of `conn_rate`: connect and transaction times in ns,
/// and the failures.
fn one_after_another(to: SocketAddr, deadline: Instant, max: usize) -> (Vec<u64>, Vec<u64>, usize) {
    let (mut connect, mut txn, mut failed) = (Vec::new(), Vec::new(), 0usize);
    while connect.len() + failed < max && Instant::now() < deadline {
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
    (connect, txn, failed)
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
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let server = std::thread::spawn(move || serve(ServeArgs { port, proto: Proto::Tcp, timeout: 3 }));
        std::thread::sleep(Duration::from_millis(100));
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let rr = client(ClientArgs { to, proto: Proto::Tcp, size: 64, duration_ms: 200, max: 100 }).unwrap();
        assert_eq!(rr.latency.count, 100);
        let c = conn_rate(ConnRateArgs { to, duration_ms: 200, max: 20, parallel: 1 }).unwrap();
        assert_eq!(c.ok, 20);
        let c = conn_rate(ConnRateArgs { to, duration_ms: 200, max: 40, parallel: 4 }).unwrap();
        assert_eq!(c.ok, 40);
        server.join().unwrap().unwrap();
    }
}
