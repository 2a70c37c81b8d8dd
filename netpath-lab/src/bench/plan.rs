//! What one bench run measures, decided once from the command line: which
//! systems and scenarios, which metrics, how many repetitions, how long each
//! run lasts, and the sizes of the scaling runs (full, `--quick`, or the
//! tests' tiny smoke mode).
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{
    catalog::{Scenario, System},
    measure::{Durations, Metric},
};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Shorter runs and smaller sizes (under 10 minutes in all).
    #[arg(long)]
    pub quick: bool,
    /// Tiny runs that only prove every path carries traffic (for tests).
    #[arg(long, hide = true)]
    pub smoke: bool,
    /// Only these scenarios (s2s, masquerade, published, hairpin, host-local).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Only these systems (netpath, netpath-xdp, netpath-tc-same-wire,
    /// iptables-nft, iptables-legacy, docker-proxy, docker,
    /// docker-no-proxy, docker-netpath, podman, podman-netpath, bridge,
    /// veth); netpath's own scaling runs (conntrack, control plane) only
    /// with netpath among them.
    #[arg(long = "system")]
    pub systems: Vec<String>,
    /// Skip the scaling, conntrack and control-plane runs.
    #[arg(long)]
    pub no_scaling: bool,
    /// Where report.json, report.md and the plot go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// Everything one run decides up front.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub mode: &'static str,
    pub scenarios: Vec<Scenario>,
    pub systems: Vec<System>,
    pub metrics: Vec<Metric>,
    pub reps: usize,
    pub durations: Durations,
    pub port_sizes: Vec<usize>,
    pub conntrack_sizes: Vec<usize>,
    pub sandbox_sizes: Vec<usize>,
    /// Docker's control plane is slower and each container costs a runc
    /// shim: smaller sizes.
    pub docker_sandbox_sizes: Vec<usize>,
    pub scaling: bool,
}

impl Plan {
    pub fn from_args(args: &BenchArgs) -> Result<Plan> {
        let scenarios = if args.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            args.scenarios.iter().map(|s| Scenario::parse(s)).collect::<Result<_>>()?
        };
        let mut plan = Plan {
            mode: "full",
            scenarios,
            systems: System::ALL.to_vec(),
            metrics: Metric::ALL.to_vec(),
            reps: 3,
            durations: Durations {
                iperf_secs: Some(3),
                iperf_bytes: "",
                rr_ms: 1000,
                conn_ms: 1000,
                wire_frames: 1_000_000,
            },
            port_sizes: vec![0, 1_000, 10_000, 30_000],
            conntrack_sizes: vec![0, 100_000, 1_000_000],
            sandbox_sizes: vec![1, 100, 1_000],
            docker_sandbox_sizes: vec![1, 100],
            scaling: !args.no_scaling,
        };
        if args.quick {
            plan.mode = "quick";
            plan.systems.retain(|s| *s != System::IptablesLegacy);
            plan.durations =
                Durations { iperf_secs: Some(1), iperf_bytes: "", rr_ms: 300, conn_ms: 500, wire_frames: 300_000 };
            plan.port_sizes = vec![0, 1_000, 10_000];
            plan.conntrack_sizes = vec![0, 100_000];
            plan.sandbox_sizes = vec![1, 10, 50];
            plan.docker_sandbox_sizes = vec![1, 10];
        }
        if args.smoke {
            plan.mode = "smoke";
            plan.systems = System::ALL.to_vec();
            plan.reps = 1;
            plan.metrics = vec![Metric::Tput1, Metric::TcpRr, Metric::UdpRr, Metric::ConnRate, Metric::WirePps];
            plan.durations =
                Durations { iperf_secs: None, iperf_bytes: "2M", rr_ms: 50, conn_ms: 50, wire_frames: 10_000 };
            plan.port_sizes = vec![0, 10];
            plan.conntrack_sizes = vec![];
            plan.sandbox_sizes = vec![1];
            plan.docker_sandbox_sizes = vec![];
        }
        if !args.systems.is_empty() {
            let wanted: Vec<System> = args.systems.iter().map(|s| System::parse(s)).collect::<Result<_>>()?;
            if args.smoke {
                plan.systems = wanted;
            } else {
                plan.systems.retain(|s| wanted.contains(s));
            }
        }
        Ok(plan)
    }
}
