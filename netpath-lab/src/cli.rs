//! The `netpath-lab` command line: the demo, the bench, and the probes the
//! tests and the bench run inside a lab's namespaces (`netpath-lab PROBE`,
//! each defined with its probe).
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{bench, demo, fixture::Binaries, probes};

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
    /// The cross-host bench on the multi-host lab: Flannel-style kernel
    /// VXLAN against the underlay bound.
    BenchCrossHost(bench::crosshost::CrossHostArgs),
    /// A traffic probe (`netpath-lab PROBE ARGS`; see `probes`).
    #[command(flatten)]
    Probe(probes::Probe),
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
        Command::BenchCrossHost(a) => bench::crosshost::run(&bins()?, a),
        Command::Probe(p) => p.run(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent_and_probes_sit_at_the_top() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["netpath-lab", "tcp-sink", "--port", "7000"]).unwrap();
        assert!(matches!(cli.command, Command::Probe(probes::Probe::TcpSink(_))), "{cli:?}");
        let cli = Cli::try_parse_from(["netpath-lab", "bench", "--quick", "--scenario", "s2s"]).unwrap();
        assert!(matches!(cli.command, Command::Bench(_)), "{cli:?}");
        assert!(Cli::try_parse_from(["netpath-lab", "no-such-probe"]).is_err());
    }
}
