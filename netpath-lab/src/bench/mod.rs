//! The benchmark rig (`netpath-lab bench`, `cargo xtask bench`): the same
//! scenarios measured on netpath, Docker's iptables ruleset, docker-proxy,
//! Docker and Podman themselves and the no-NAT bounds, each system in its
//! own hermetic lab (`systems/`, one file per system), then the scaling
//! runs; results as JSON, Markdown and an SVG plot.
pub mod catalog;
pub mod crosshost;
pub mod measure;
pub mod plan;
pub mod report;
pub mod scaling;
pub mod systems;
pub mod testbed;
pub mod topology;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use catalog::{Scenario, System};
use measure::{Figures, Metric, Summary};
use netpath::{ethtool, netns, signals};
pub use plan::{BenchArgs, Plan};
use systems::{bounds, docker, docker_netpath, iptables, netpath as np, podman, podman_netpath};
use testbed::Testbed;

use crate::fixture::{Binaries, HOST_UPLINK};

/// Figures of one system in one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Result1 {
    pub system: System,
    pub scenario: Scenario,
    pub figures: std::collections::BTreeMap<&'static str, Summary>,
    /// How much the system's own counter moved while this scenario ran
    /// (netpath STATS, iptables rule packets, docker-proxy CPU ticks,
    /// server-side packets for the bounds).
    pub evidence: u64,
    pub errors: Vec<String>,
    /// What the system under test itself cannot do, found while measuring
    /// (e.g. `measure::WrongReplySource`).
    pub limitations: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub plan: Plan,
    pub duration_s: f64,
    /// /proc/loadavg before and after: the machine may be shared.
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub results: Vec<Result1>,
    pub ports: Vec<scaling::Point>,
    pub conntrack: Vec<scaling::Point>,
    pub control_plane: Vec<scaling::Point>,
    /// netpath's fast path measured again with the largest number of
    /// sandboxes of the control-plane run still up.
    pub crowded: Vec<Result1>,
    pub errors: Vec<String>,
}

/// What the fast path is measured with again once the control-plane run has
/// brought up its largest number of sandboxes.
const CROWDED_METRICS: [Metric; 3] = [Metric::Tput1, Metric::TcpRr, Metric::ConnRate];

/// A testbed lives at most this long (servers exit on their own after it).
const LIFETIME: Duration = Duration::from_secs(3 * 3600);

fn measure_all(tb: &Testbed, system: System, plan: &Plan, results: &mut Vec<Result1>) {
    for &scenario in &plan.scenarios {
        let Some(route) = tb.route(system, scenario) else { continue };
        eprintln!("bench: {} / {}", system.label(), scenario.label());
        let (mut errors, mut limitations) = (Vec::new(), Vec::new());
        let before = tb.evidence(system, scenario).unwrap_or_else(|e| {
            errors.push(format!("evidence: {e:#}"));
            0
        });
        // Warm-up, discarded: neighbours resolved, servers' first accept done.
        let _ = measure::conn_rate(route, 20, &tb.lab.lab_bin);
        let mut samples: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
        for _ in 0..plan.reps {
            if signals::interrupted() {
                errors.push("interrupted".into());
                break;
            }
            for &metric in plan.metrics.iter().filter(|m| m.applies(scenario)) {
                if metric.is_udp() && !limitations.is_empty() {
                    continue;
                }
                // The uplink takes wire frames only with a NAPI queue: XDP
                // gives it one, GRO does for the other systems.
                let _napi = match metric {
                    Metric::WirePps => Some(UplinkGro::on(&tb.host)),
                    _ => None,
                };
                match measure::measure(route, metric, &plan.durations, &tb.lab.lab_bin) {
                    Ok(f) => merge(&mut samples, f),
                    Err(e) if e.is::<measure::WrongReplySource>() => limitations.push(format!("UDP: {e}")),
                    Err(e) => errors.push(format!("{metric:?}: {e:#}")),
                }
            }
        }
        let after = tb.evidence(system, scenario).unwrap_or_else(|e| {
            errors.push(format!("evidence: {e:#}"));
            0
        });
        errors.dedup();
        limitations.sort();
        limitations.dedup();
        results.push(Result1 {
            system,
            scenario,
            figures: samples.into_iter().filter_map(|(k, v)| Some((k, Summary::of(&v)?))).collect(),
            evidence: after.saturating_sub(before),
            errors,
            limitations,
        });
    }
}

/// GRO on the lab host's uplink while alive.
struct UplinkGro(std::path::PathBuf);

impl UplinkGro {
    fn on(host: &testbed::Place) -> UplinkGro {
        let set = |on| move || ethtool::set_gro(HOST_UPLINK, on);
        if let Err(e) = netns::run_in(&host.ns, set(true)) {
            eprintln!("bench: GRO on {HOST_UPLINK}: {e:#}");
        }
        UplinkGro(host.ns.clone())
    }
}

impl Drop for UplinkGro {
    fn drop(&mut self) {
        let _ = netns::run_in(&self.0, || ethtool::set_gro(HOST_UPLINK, false));
    }
}

fn merge(into: &mut std::collections::BTreeMap<&'static str, Vec<f64>>, f: Figures) {
    for (k, v) in f {
        into.entry(k).or_default().push(v);
    }
}

/// Runs the plan; every testbed is torn down before the next is built.
pub fn execute(plan: &Plan, bins: &Binaries) -> Result<Report> {
    let started = Instant::now();
    let loadavg = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    let loadavg_before = loadavg();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let (mut ports, mut conntrack, mut control) = (Vec::new(), Vec::new(), Vec::new());
    let mut engine_control = Vec::new();
    let mut note = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            eprintln!("bench: {what}: {e:#}");
            errors.push(format!("{what}: {e:#}"));
        }
    };
    let scaling_scenarios = {
        let mut s = plan.scenarios.clone();
        if plan.scaling && !s.contains(&Scenario::Published) {
            s.push(Scenario::Published);
        }
        s
    };
    let only_plan = Plan { scenarios: plan.scenarios.clone(), ..plan.clone() };
    for &system in &plan.systems {
        let r = (|| -> Result<()> {
            match system {
                System::Netpath => {
                    let tb = np::testbed(bins, &scaling_scenarios, None, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    if plan.scaling {
                        ports.extend(scaling::netpath_ports(&tb, &plan.port_sizes, plan.reps, &plan.durations)?);
                    }
                }
                System::NetpathXdp => {
                    let tb = np::xdp_testbed(bins, &plan.scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    if plan.systems.contains(&System::NetpathTcSameWire) {
                        tb.lab.datapath().detach_uplink_xdp(HOST_UPLINK)?;
                        measure_all(&tb, System::NetpathTcSameWire, &only_plan, &mut results);
                    }
                }
                System::NetpathTcSameWire => {}
                System::IptablesNft | System::IptablesLegacy => {
                    let tb = iptables::testbed(bins, system, &scaling_scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    if plan.systems.contains(&System::DockerProxy) && system == System::IptablesNft {
                        measure_all(&tb, System::DockerProxy, &only_plan, &mut results);
                    }
                    if plan.scaling {
                        ports.extend(scaling::iptables_ports(
                            &tb,
                            system,
                            &plan.port_sizes,
                            plan.reps,
                            &plan.durations,
                        )?);
                    }
                }
                System::Bridge => {
                    let tb = bounds::bridge_testbed(bins, &plan.scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                }
                System::KernelVxlan | System::Underlay | System::DockerSwarm | System::NetpathOverlay => {
                    anyhow::bail!("{} is measured across hosts: `netpath-lab bench-cross-host`", system.key())
                }
                System::Veth => {
                    if plan.scenarios.contains(&Scenario::SandboxToSandbox) {
                        let tb = bounds::veth_testbed(bins, LIFETIME)?;
                        measure_all(&tb, system, &only_plan, &mut results);
                    }
                }
                System::Docker | System::DockerNoProxy => {
                    if !docker::available() {
                        anyhow::bail!("dockerd, runc or busybox-static missing (cargo xtask bench installs them)");
                    }
                    let tb = docker::testbed(bins, system == System::Docker, &scaling_scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    // Docker's own networking in its normal configuration
                    // (userland proxy on): the row docker-netpath compares with.
                    if system == System::Docker {
                        let d = docker::dockerd_of(&tb).expect("docker testbed has a dockerd");
                        engine_scaling(&tb, system, d, plan, &mut ports, &mut engine_control)?;
                    }
                }
                System::DockerNetpath => {
                    if !docker::available() {
                        anyhow::bail!("dockerd, runc or busybox-static missing (cargo xtask bench installs them)");
                    }
                    let tb = docker_netpath::testbed(bins, &scaling_scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    let d = docker::dockerd_of(&tb).expect("docker testbed has a dockerd");
                    engine_scaling(&tb, system, &docker_netpath::engine(d), plan, &mut ports, &mut engine_control)?;
                }
                System::Podman => {
                    if !podman::available() {
                        anyhow::bail!(
                            "podman, netavark, conmon, runc or busybox-static missing (cargo xtask bench installs them)"
                        );
                    }
                    let tb = podman::testbed(bins, &scaling_scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    let engine = podman_netpath::engine_of(&tb).context("the testbed has no engine")?;
                    engine_scaling(&tb, system, engine, plan, &mut ports, &mut engine_control)?;
                }
                System::PodmanNetpath => {
                    if !podman_netpath::available(bins) {
                        anyhow::bail!("podman, conmon, runc, busybox-static or netpath-cni missing");
                    }
                    let tb = podman_netpath::testbed(bins, &scaling_scenarios, LIFETIME)?;
                    measure_all(&tb, system, &only_plan, &mut results);
                    let engine = podman_netpath::engine_of(&tb).context("the testbed has no engine")?;
                    engine_scaling(&tb, system, engine, plan, &mut ports, &mut engine_control)?;
                }
                System::DockerProxy => {}
            }
            Ok(())
        })();
        note(system.label(), r);
    }
    // netpath's own scaling runs belong to its row: a run of other systems
    // only (e.g. the engines) skips them.
    let netpath_scaling = plan.scaling && plan.systems.contains(&System::Netpath);
    if netpath_scaling && !plan.conntrack_sizes.is_empty() {
        let r = (|| -> Result<()> {
            let max = plan.conntrack_sizes.iter().max().copied().unwrap_or(0);
            // conntrack-max counts connections; the fill writes `max` entries (two per connection).
            let cfg = serde_json::json!({ "conntrack-max": max / 2 + max / 20 + 65536 });
            let tb = np::testbed(bins, &[Scenario::Published], Some(cfg), LIFETIME)?;
            conntrack = scaling::conntrack(&tb, &plan.conntrack_sizes, plan.reps, &plan.durations)?;
            Ok(())
        })();
        note("conntrack scaling", r);
    }
    let mut crowded = Vec::new();
    if netpath_scaling && !plan.sandbox_sizes.is_empty() {
        let r = (|| -> Result<()> {
            let tb = np::testbed(bins, &plan.scenarios, None, LIFETIME)?;
            control = scaling::control_plane(&tb, &plan.sandbox_sizes, plan.reps.max(5))?;
            // The fast path again, every background sandbox still up.
            let fast = Plan { metrics: CROWDED_METRICS.to_vec(), ..only_plan.clone() };
            measure_all(&tb, System::Netpath, &fast, &mut crowded);
            Ok(())
        })();
        note("control plane", r);
    }
    Ok(Report {
        date: report::utc_now(),
        machine: report::machine(),
        plan: plan.clone(),
        duration_s: started.elapsed().as_secs_f64(),
        loadavg_before,
        loadavg_after: loadavg(),
        results,
        ports,
        conntrack,
        control_plane: control.into_iter().chain(engine_control).collect(),
        crowded,
        errors,
    })
}

/// A container engine's published-port scaling and control plane (its
/// `run -p`/`rm` with containers present), for its row of the engine table.
fn engine_scaling(
    tb: &testbed::Testbed,
    system: System,
    engine: &dyn systems::engine::Engine,
    plan: &Plan,
    ports: &mut Vec<scaling::Point>,
    control: &mut Vec<scaling::Point>,
) -> Result<()> {
    if !plan.scaling {
        return Ok(());
    }
    let sizes = scaling::engine_port_sizes(system, plan.mode, &plan.port_sizes);
    ports.extend(scaling::engine_ports(tb, system, engine, &sizes, plan.reps, &plan.durations)?);
    control.extend(scaling::engine_control_plane(system, engine, &plan.docker_sandbox_sizes, plan.reps.max(5))?);
    Ok(())
}

/// `netpath-lab bench`: runs the plan and writes the report files.
pub fn run(bins: &Binaries, args: BenchArgs) -> Result<i32> {
    let plan = Plan::from_args(&args)?;
    signals::install();
    let report = execute(&plan, bins)?;
    std::fs::create_dir_all(&args.out)?;
    let md = report::markdown(&report);
    std::fs::write(args.out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(args.out.join("report.md"), &md)?;
    report::plot(&report, &args.out.join("conn-vs-ports.svg"))?;
    println!("{md}");
    eprintln!("bench: wrote {}/report.{{md,json}} and conn-vs-ports.svg", args.out.display());
    Ok(0)
}
