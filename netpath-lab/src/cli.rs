//! The `netpath-lab` command line: the demo, the bench, and the probes the
//! tests and the bench run inside a lab's namespaces (`netpath-lab PROBE`).
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{
    bench, demo,
    fixture::Binaries,
    probes::{dns, malformed, rr, tcp, udp, wire},
};

#[derive(Parser, Debug)]
#[command(name = "netpath-lab", about = "netpath's test and benchmark rig: hermetic labs, probes, demo, bench")]
pub struct Cli {
    /// The netpath binary the demo and the bench drive (default: `netpath`
    /// next to this binary).
    #[arg(long, env = Binaries::NETPATH_ENV, global = true)]
    netpath: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a lab, run two sandboxes with traffic between them and show the
    /// data path counters live until Ctrl-C or the duration ends.
    Demo(demo::DemoArgs),
    /// The benchmark rig: netpath against iptables, docker-proxy, Docker,
    /// Podman and the no-NAT bounds (what `cargo xtask bench` runs).
    Bench(bench::BenchArgs),
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
    /// Send hand-made broken IPv4 frames out of IFACE (raw socket); print how many.
    SendMalformed(malformed::SendArgs),
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

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> i32 {
    match dispatch(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netpath-lab: {e:#}");
            1
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    let bins = || -> Result<Binaries> {
        let lab = std::env::current_exe()?;
        let netpath = match cli.netpath.clone() {
            Some(p) => p,
            None => lab.with_file_name("netpath"),
        };
        anyhow::ensure!(netpath.exists(), "no netpath binary at {} (pass --netpath)", netpath.display());
        Ok(Binaries { netpath, lab })
    };
    match cli.command {
        Command::Demo(a) => demo::run(&bins()?, a),
        Command::Bench(a) => bench::run(&bins()?, a),
        Command::TcpSink(a) => tcp::sink(a),
        Command::TcpSend(a) => tcp::send(a),
        Command::TcpServe(a) => tcp::serve(a),
        Command::TcpChurn(a) => tcp::churn(a),
        Command::UdpSink(a) => udp::sink(a),
        Command::UdpSend(a) => udp::send(a),
        Command::UdpEcho(a) => udp::echo(a),
        Command::UdpAsk(a) => udp::ask(a),
        Command::WireSend(a) => wire::send(a),
        Command::SendMalformed(a) => malformed::send(a),
        Command::DnsStub(a) => dns::stub(a),
        Command::Dig(a) => dns::dig(a),
        Command::RrServe(a) => rr::serve(a),
        Command::RrClient(a) => print_json(&rr::client(a)?),
        Command::ConnRate(a) => print_json(&rr::conn_rate(a)?),
    }
}

fn print_json(report: &impl serde::Serialize) -> Result<i32> {
    println!("{}", serde_json::to_string(report)?);
    Ok(0)
}
