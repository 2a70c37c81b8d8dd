//! Metrics: iperf3 throughput and small-packet rate, the bench's own
//! latency and connection-rate probes, and CPU time from /proc/stat.
//! Every client is bounded in time (its own duration plus a hard kill).
use std::{
    collections::BTreeMap,
    io::Read,
    net::SocketAddrV4,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::{catalog::Scenario, testbed::Route, topology::IPERF_PORT};
use crate::probes::{
    self,
    rr::{ConnReport, RrReport},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    Tput1,
    Tput4,
    TcpRr,
    UdpRr,
    ConnRate,
    UdpPps,
    /// Small UDP frames arriving from the outside as from a NIC (lab wire),
    /// counted at the server's UDP layer: the data path's own packet rate,
    /// no sender stack in front of it.
    WirePps,
}

impl Metric {
    pub const ALL: [Metric; 7] =
        [Metric::Tput1, Metric::Tput4, Metric::TcpRr, Metric::UdpRr, Metric::ConnRate, Metric::UdpPps, Metric::WirePps];

    /// Whether the metric's traffic is UDP answered by the server.
    pub fn is_udp(self) -> bool {
        matches!(self, Metric::UdpRr | Metric::UdpPps)
    }

    /// Whether the metric applies to a scenario: the wire is the outside's.
    pub fn applies(self, scenario: Scenario) -> bool {
        self != Metric::WirePps || scenario == Scenario::Published
    }
}

/// How long each measurement runs.
#[derive(Clone, Debug, Serialize)]
pub struct Durations {
    /// iperf3 seconds (throughput and UDP pps); None: a fixed byte count instead.
    pub iperf_secs: Option<u32>,
    /// iperf3 bytes when `iperf_secs` is None.
    pub iperf_bytes: &'static str,
    pub rr_ms: u64,
    pub conn_ms: u64,
    /// Frames per wire run.
    pub wire_frames: u32,
}

/// Busy CPU time of the whole machine (all CPUs, every state but idle and
/// iowait), from /proc/stat. The data path is kernel work spread over
/// softirqs of both CPUs, so a machine-wide figure is what captures it.
pub fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (total - idle) as f64 / hz
}

/// Runs `cmd` with stdout captured, killing it after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<String> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{:?} ran past {limit:?} and was killed", cmd.get_program());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{:?} failed ({status}): {} {}", cmd.get_program(), stderr.trim(), stdout.trim());
    }
    Ok(stdout)
}

/// Named figures of one measurement.
pub type Figures = BTreeMap<&'static str, f64>;

fn iperf(route: &Route, d: &Durations, extra: &[&str]) -> Result<(Value, f64)> {
    let mut cmd = route.client.cmd("iperf3")?;
    cmd.args(["-c", &route.addr.to_string(), "-p", &route.iperf_port.to_string(), "-J"]);
    cmd.args(["--connect-timeout", "3000"]);
    match d.iperf_secs {
        Some(s) => cmd.args(["-t", &s.to_string()]),
        None => cmd.args(["-n", d.iperf_bytes]),
    };
    cmd.args(extra);
    let limit = Duration::from_secs(d.iperf_secs.unwrap_or(2) as u64 + 15);
    let cpu0 = busy_cpu_seconds();
    let out = run_bounded(cmd, limit)?;
    let cpu = busy_cpu_seconds() - cpu0;
    let v: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    Ok((v, cpu))
}

/// One measurement of `metric` over `route`.
pub fn measure(route: &Route, metric: Metric, d: &Durations, lab_bin: &std::path::Path) -> Result<Figures> {
    let measured = measure_once(route, metric, d, lab_bin);
    if measured.is_err() && metric.is_udp() {
        if let Some(from) = udp_answer_source(route, lab_bin) {
            let asked = SocketAddrV4::new(route.addr, route.rr_port);
            if from != asked {
                return Err(WrongReplySource { asked, from }.into());
            }
        }
    }
    measured
}

fn measure_once(route: &Route, metric: Metric, d: &Durations, lab_bin: &std::path::Path) -> Result<Figures> {
    let mut f = Figures::new();
    match metric {
        Metric::Tput1 | Metric::Tput4 => {
            let streams: &[&str] = if metric == Metric::Tput4 { &["-P", "4"] } else { &[] };
            let (v, cpu) = iperf(route, d, streams)?;
            let r = &v["end"]["sum_received"];
            let bps = r["bits_per_second"].as_f64().context("no sum_received")?;
            let bytes = r["bytes"].as_f64().unwrap_or(0.0);
            let (k_gbps, k_cpu) = if metric == Metric::Tput1 {
                ("tput1_gbps", "tput1_cpu_s_per_gb")
            } else {
                ("tput4_gbps", "tput4_cpu_s_per_gb")
            };
            f.insert(k_gbps, bps / 1e9);
            if bytes > 0.0 {
                f.insert(k_cpu, cpu / (bytes / 1e9));
            }
        }
        Metric::UdpPps => {
            let (v, cpu) = iperf(route, d, &["-u", "-b", "0", "-l", "64"])?;
            let s = &v["end"]["sum"];
            let packets = s["packets"].as_f64().context("no packets")?;
            let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
            let secs = s["seconds"].as_f64().filter(|x| *x > 0.0).context("no seconds")?;
            let got = (packets - lost).max(0.0);
            f.insert("udp_pps", got / secs);
            if got > 0.0 {
                f.insert("udp_cpu_us_per_pkt", cpu * 1e6 / got);
            }
        }
        Metric::WirePps => {
            let (delivered, csum_errors, seconds) = wire(route, d.wire_frames, lab_bin)?;
            if csum_errors > 0 {
                bail!("{csum_errors} datagrams arrived with bad checksums");
            }
            f.insert("wire_pps", delivered as f64 / seconds);
            f.insert("wire_delivered_pct", delivered as f64 * 100.0 / f64::from(d.wire_frames));
        }
        Metric::TcpRr | Metric::UdpRr => {
            let proto = if metric == Metric::TcpRr { "tcp" } else { "udp" };
            let mut cmd = route.client.cmd(lab_bin)?;
            cmd.args(["rr-client", "--to", &format!("{}:{}", route.addr, route.rr_port), "--proto", proto]);
            cmd.args(["--duration-ms", &d.rr_ms.to_string()]);
            let out = run_bounded(cmd, Duration::from_millis(d.rr_ms) + Duration::from_secs(15))?;
            let r: RrReport = serde_json::from_str(out.trim())?;
            let (k50, k99) = if metric == Metric::TcpRr {
                ("tcp_rr_p50_us", "tcp_rr_p99_us")
            } else {
                ("udp_rr_p50_us", "udp_rr_p99_us")
            };
            f.insert(k50, r.latency.p50_us);
            f.insert(k99, r.latency.p99_us);
        }
        Metric::ConnRate => {
            let r = conn_rate(route, d.conn_ms, lab_bin)?;
            f.insert("conn_per_s", r.0.per_s);
            f.insert("connect_p99_us", r.0.connect.p99_us);
            if r.0.ok > 0 {
                f.insert("conn_cpu_us", r.1 * 1e6 / r.0.ok as f64);
            }
        }
    }
    Ok(f)
}

/// A system under test answered UDP from another address than the one
/// asked: a connected client (most resolvers, QUIC, any `connect`ed UDP
/// socket) never accepts those answers. A property of the system, reported
/// as such, not a failure of the bench.
#[derive(Debug)]
pub struct WrongReplySource {
    pub asked: SocketAddrV4,
    pub from: SocketAddrV4,
}

impl std::fmt::Display for WrongReplySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UDP answers come from {}, not from {} as asked: a connected UDP client drops them",
            self.from, self.asked
        )
    }
}

impl std::error::Error for WrongReplySource {}

/// Where the answer to one datagram to the route's echo port comes from,
/// asked from an unconnected socket.
fn udp_answer_source(route: &Route, lab_bin: &std::path::Path) -> Option<SocketAddrV4> {
    let mut cmd = route.client.cmd(lab_bin).ok()?;
    cmd.args(["udp-ask", "--to", &format!("{}:{}", route.addr, route.rr_port), "--timeout", "2"]);
    let out = cmd.output().ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["from"].as_str()?.parse().ok()
}

/// UDP datagrams that reached the server's UDP layer (delivered or dropped
/// for a full socket buffer) and those with bad checksums, from its
/// /proc/net/snmp.
fn udp_arrivals(route: &Route) -> Result<(u64, u64)> {
    let snmp = route.server.run("cat", &["/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().context("no Udp header")?, udp.next().context("no Udp values")?);
    let field = |name: &str| -> u64 {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("InDatagrams") + field("RcvbufErrors"), field("InCsumErrors")))
}

/// `frames` wire frames from the outside to the route's UDP iperf port, a
/// sink listening at the server; returns (arrived, bad checksums, seconds
/// the sender took).
fn wire(route: &Route, frames: u32, lab_bin: &std::path::Path) -> Result<(u64, u64, f64)> {
    let mut sink = route.server.cmd(lab_bin)?;
    sink.args(["udp-sink", "--port", &IPERF_PORT.to_string(), "--count", &(frames + 1).to_string()]);
    sink.args(["--timeout", "30"]);
    let (mut sink, _out) = probes::start_sink(sink)?;
    let before = udp_arrivals(route)?;
    let mut send = route.client.cmd(lab_bin)?;
    send.args(["wire-send", "--to", &format!("{}:{}", route.addr, route.iperf_port)]);
    send.args(["--count", &frames.to_string()]);
    let sent = run_bounded(send, Duration::from_secs(60));
    // Let the last batch reach the socket.
    std::thread::sleep(Duration::from_millis(200));
    let after = udp_arrivals(route);
    let _ = sink.kill();
    let _ = sink.wait();
    let v: Value = serde_json::from_str(sent?.trim()).context("wire-send output")?;
    let seconds = v["seconds"].as_f64().filter(|s| *s > 0.0).context("no seconds")?;
    let after = after?;
    Ok((after.0.saturating_sub(before.0), after.1.saturating_sub(before.1), seconds))
}

/// Clients of the connection-rate probe: more than the machine's CPUs, so
/// that the path's cost per connection, not one client's round trips,
/// decides the rate.
pub const CONN_CLIENTS: usize = 4;

/// The connection-rate probe over `route`; returns its report and the busy
/// CPU seconds it took.
pub fn conn_rate(route: &Route, ms: u64, lab_bin: &std::path::Path) -> Result<(ConnReport, f64)> {
    let mut cmd = route.client.cmd(lab_bin)?;
    cmd.args(["conn-rate", "--to", &format!("{}:{}", route.addr, route.rr_port)]);
    cmd.args(["--parallel", &CONN_CLIENTS.to_string()]);
    cmd.args(["--duration-ms", &ms.to_string()]);
    let cpu0 = busy_cpu_seconds();
    let out = run_bounded(cmd, Duration::from_millis(ms) + Duration::from_secs(15))?;
    let cpu = busy_cpu_seconds() - cpu0;
    let r: ConnReport = serde_json::from_str(out.trim())?;
    if r.ok == 0 {
        bail!("no connection succeeded ({} failed)", r.failed);
    }
    Ok((r, cpu))
}

/// Median, min and max of repeated runs.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Some(Summary { median, min: s[0], max: s[n - 1], samples: samples.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_min_max() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert!(Summary::of(&[]).is_none());
        assert!(busy_cpu_seconds() > 0.0);
    }
}
