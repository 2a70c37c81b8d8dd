//! Traffic endpoints that tests, the bench and the demo run inside the lab's
//! sandboxes and namespaces as `netpath-lab PROBE ARGS`. Each prints one JSON
//! object with what it saw, so a claim about the data path is checked at the
//! receiver; a server first prints a "listening" line (`announce`), which
//! `start_sink` waits for.
pub mod dns;
pub mod rr;
pub mod tcp;
pub mod udp;
pub mod wire;

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, ChildStdout, Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

/// Every probe, as `netpath-lab PROBE ARGS`.
#[derive(Subcommand, Debug)]
pub enum Probe {
    /// Accept one TCP connection, read to EOF, print what arrived as JSON.
    TcpSink(tcp::SinkArgs),
    /// Send BYTES of deterministic payload over TCP, print what was sent as JSON.
    TcpSend(tcp::SendArgs),
    /// Accept connections and read each to EOF until MAX were served or
    /// TIMEOUT passed; print how many and from where.
    TcpServe(tcp::ServeArgs),
    /// Open COUNT short connections one after another (connect, send a byte,
    /// close); print how many succeeded.
    TcpChurn(tcp::ChurnArgs),
    /// Receive COUNT UDP datagrams, print what arrived as JSON.
    UdpSink(udp::SinkArgs),
    /// Send COUNT UDP datagrams of SIZE bytes.
    UdpSend(udp::SendArgs),
    /// Answer up to COUNT UDP datagrams with the same bytes.
    UdpEcho(udp::EchoArgs),
    /// Send one UDP datagram and print where the answer appeared to come from.
    UdpAsk(udp::AskArgs),
    /// Hand COUNT identical UDP frames to TO to the neighbour on DEV as a NIC
    /// would (XDP live frames, no sender stack); print frames and seconds.
    WireSend(wire::SendArgs),
    /// A tiny upstream DNS server for tests: answers A queries for NAME with
    /// ADDR, NXDOMAIN otherwise, until TIMEOUT.
    DnsStub(dns::StubArgs),
    /// Ask the first nameserver of /etc/resolv.conf (or SERVER) for NAME's A
    /// records; print the answer as JSON.
    Dig(dns::DigArgs),
    /// Echo server for the bench's latency and connection-rate probes.
    RrServe(rr::ServeArgs),
    /// Back-to-back request/response of SIZE bytes for DURATION_MS (or MAX
    /// rounds); prints latency percentiles as JSON.
    RrClient(rr::ClientArgs),
    /// New TCP connections from PARALLEL clients, each one after another,
    /// for DURATION_MS (or MAX in all); prints the rate and connect latency
    /// as JSON.
    ConnRate(rr::ConnRateArgs),
}

impl Probe {
    /// Runs the probe; its report is on stdout, the exit code returned.
    pub fn run(self) -> Result<i32> {
        match self {
            Probe::TcpSink(a) => tcp::sink(a),
            Probe::TcpSend(a) => tcp::send(a),
            Probe::TcpServe(a) => tcp::serve(a),
            Probe::TcpChurn(a) => tcp::churn(a),
            Probe::UdpSink(a) => udp::sink(a),
            Probe::UdpSend(a) => udp::send(a),
            Probe::UdpEcho(a) => udp::echo(a),
            Probe::UdpAsk(a) => udp::ask(a),
            Probe::WireSend(a) => wire::send(a),
            Probe::DnsStub(a) => dns::stub(a),
            Probe::Dig(a) => dns::dig(a),
            Probe::RrServe(a) => rr::serve(a),
            Probe::RrClient(a) => print_json(&rr::client(a)?),
            Probe::ConnRate(a) => print_json(&rr::conn_rate(a)?),
        }
    }
}

fn print_json(report: &impl serde::Serialize) -> Result<i32> {
    println!("{}", serde_json::to_string(report)?);
    Ok(0)
}

/// Deterministic, incompressible-looking payload (xorshift).
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints the "listening" line `start_sink` waits for.
pub fn announce(addr: SocketAddr) {
    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
    let _ = std::io::stdout().flush();
}

/// Starts a sink in the background and waits for its "listening" line.
pub fn start_sink(mut cmd: Command) -> Result<(Child, BufReader<ChildStdout>)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("starting sink")?;
    let mut out = BufReader::new(child.stdout.take().context("sink stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("listening") {
        let _ = child.kill();
        bail!("sink did not start: {line:?}");
    }
    Ok((child, out))
}
