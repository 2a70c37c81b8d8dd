//! netpath as a system under test: one network, two sandboxes, the server's
//! ports published, everything set up through netpath's own command line;
//! and the same lab with XDP in front of TC on the uplink. The evidence is
//! the data path's own counters.
use std::time::Duration;

use anyhow::Result;
use netpath::datapath::Datapath;
use netpath_common::{Program, Reason};

use crate::{
    bench::{
        catalog::{Scenario, System},
        testbed::{Evidence, Place, Procs, Route, Testbed, routes_for, start_servers},
        topology::{CLIENT_IP, GATEWAY, IPERF_PORT, PUB_IPERF, PUB_RR, RR_PORT, SERVER_IP, SUBNET},
    },
    fixture::{Binaries, Lab},
};

/// netpath: one network, two sandboxes, the server's ports published with
/// the CLI; servers run in the sandbox and outside.
pub fn testbed(
    bins: &Binaries,
    scenarios: &[Scenario],
    config: Option<serde_json::Value>,
    lifetime: Duration,
) -> Result<Testbed> {
    let lab = Lab::create("bench-np", bins)?;
    if let Some(cfg) = config {
        lab.configure(&cfg.to_string())?;
    }
    lab.netpath_ok(&["network", "create", "bench", "--subnet", SUBNET, "--gateway", &GATEWAY.to_string()])?;
    let (pi, pr) = (format!("{PUB_IPERF}:{IPERF_PORT}"), format!("{PUB_RR}:{RR_PORT}"));
    let (piu, pru) = (format!("{pi}/udp"), format!("{pr}/udp"));
    let srv = SERVER_IP.to_string();
    let publish = ["-p", &pi, "-p", &piu, "-p", &pr, "-p", &pru];
    let mut run = vec!["run", "-d", "--name", "srv", "--network", "bench", "--ip", &srv];
    run.extend(publish);
    lab.netpath_ok(&run)?;
    lab.netpath_ok(&["run", "-d", "--name", "cli", "--network", "bench", "--ip", &CLIENT_IP.to_string()])?;
    let server = Place::ns(lab.roots.netns_dir().join("srv"));
    let client = Place::ns(lab.roots.netns_dir().join("cli"));
    let outside = Place::ns(&lab.outside_ns);
    // Host processes reach published ports through the socket programs,
    // which act for sockets in the instance's cgroup.
    let host_local = Place { ns: lab.host_ns.clone(), cgroup: Some(lab.roots.cgroup.clone()) };
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    let routes = routes_for(System::Netpath, &client, (&server, SERVER_IP), &outside, &host_local, scenarios);
    let datapath = lab.datapath();
    Ok(Testbed::new(System::Netpath, lab, routes, procs).with_evidence(System::Netpath, TcCounters(datapath)))
}

/// netpath with `"uplink-xdp": "native"`: routes for the XDP row and, on the
/// same lab (the outside's TX checksum offload off, as XDP needs on veth),
/// for the TC row measured once XDP is detached.
pub fn xdp_testbed(bins: &Binaries, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let wanted: Vec<Scenario> =
        scenarios.iter().copied().filter(|s| System::NetpathXdp.scenarios().contains(s)).collect();
    let cfg = serde_json::json!({ "uplink-xdp": "native" });
    let mut tb = testbed(bins, &wanted, Some(cfg), lifetime)?;
    tb.system = System::NetpathXdp;
    let tc: Vec<Route> = tb.routes.iter().map(|r| Route { system: System::NetpathTcSameWire, ..r.clone() }).collect();
    for r in &mut tb.routes {
        r.system = System::NetpathXdp;
    }
    tb.routes.extend(tc);
    tb.evidence.clear();
    let (xdp, tc) = (tb.lab.datapath(), tb.lab.datapath());
    Ok(tb.with_evidence(System::NetpathXdp, XdpCounters(xdp)).with_evidence(System::NetpathTcSameWire, TcCounters(tc)))
}

/// The TC and socket programs' counters of the scenario's path.
pub struct TcCounters(pub Datapath);

impl Evidence for TcCounters {
    fn count(&self, scenario: Scenario, _: &Route) -> Result<u64> {
        let c = |p| self.0.counters(p);
        Ok(match scenario {
            Scenario::SandboxToSandbox => c(Program::FromContainer)?.packets(Reason::Forwarded),
            Scenario::Masquerade => {
                c(Program::ToUplink)?.packets(Reason::SnatNew) + c(Program::FromUplink)?.packets(Reason::Nat)
            }
            Scenario::Published => {
                c(Program::FromUplink)?.packets(Reason::DnatNew) + c(Program::FromUplink)?.packets(Reason::Nat)
            }
            Scenario::Hairpin => {
                c(Program::FromContainer)?.packets(Reason::DnatNew) + c(Program::FromContainer)?.packets(Reason::Nat)
            }
            Scenario::HostLocal => c(Program::Socket)?.packets(Reason::SocketRedirect),
        })
    }
}

/// The uplink's XDP program's own counters.
struct XdpCounters(Datapath);

impl Evidence for XdpCounters {
    fn count(&self, scenario: Scenario, _: &Route) -> Result<u64> {
        let c = self.0.counters(Program::XdpFromUplink)?;
        Ok(match scenario {
            Scenario::Published => c.packets(Reason::DnatNew) + c.packets(Reason::Nat),
            Scenario::Masquerade => c.packets(Reason::Nat),
            _ => 0,
        })
    }
}
