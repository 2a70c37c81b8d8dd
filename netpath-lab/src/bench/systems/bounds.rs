//! The bounds every figure is read against: the kernel bridge with plain
//! routing and no rule at all (the outside routes to the sandbox subnet
//! directly), and one raw veth pair (the bound for one hop). The evidence
//! is the packets the server's namespace received.
use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;

use super::bridge;
use crate::{
    bench::{
        catalog::{Scenario, System},
        testbed::{Evidence, Place, Procs, Route, Testbed, start_servers},
        topology::{IPERF_PORT, RR_PORT, SERVER_IP, SUBNET},
    },
    fixture::{Binaries, HOST_UPLINK_IP, Lab, OUTSIDE_IP},
};

/// The bridge, no NAT: each scenario straight to the server's own address.
pub fn bridge_testbed(bins: &Binaries, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let bridge::BridgeLab { lab, extra, server, client } = bridge::build("bench-br", bins)?;
    let host = Place::ns(&lab.host_ns);
    let outside = Place::ns(&lab.outside_ns);
    outside.run("ip", &["route", "add", SUBNET, "via", &HOST_UPLINK_IP.to_string()])?;
    let routes = [
        (Scenario::SandboxToSandbox, &client, &server, SERVER_IP),
        (Scenario::Masquerade, &client, &outside, OUTSIDE_IP),
        (Scenario::Published, &outside, &server, SERVER_IP),
        (Scenario::HostLocal, &host, &server, SERVER_IP),
    ]
    .into_iter()
    .filter(|(scenario, ..)| scenarios.contains(scenario))
    .map(|(scenario, client, server, addr)| direct(System::Bridge, scenario, client, server, addr))
    .collect();
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    if scenarios.contains(&Scenario::Masquerade) {
        start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    }
    let mut tb = Testbed::new(System::Bridge, lab, routes, procs).with_evidence(System::Bridge, ServerRx);
    tb.extra = Some(extra);
    Ok(tb)
}

/// The one-hop bound: the lab's own uplink veth pair, client in the host,
/// servers outside.
pub fn veth_testbed(bins: &Binaries, lifetime: Duration) -> Result<Testbed> {
    let lab = Lab::create("bench-veth", bins)?;
    let host = Place::ns(&lab.host_ns);
    let outside = Place::ns(&lab.outside_ns);
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    let routes = vec![direct(System::Veth, Scenario::SandboxToSandbox, &host, &outside, OUTSIDE_IP)];
    Ok(Testbed::new(System::Veth, lab, routes, procs).with_evidence(System::Veth, ServerRx))
}

/// A route to the servers' own ports at `addr`, nothing translated.
fn direct(system: System, scenario: Scenario, client: &Place, server: &Place, addr: Ipv4Addr) -> Route {
    Route {
        system,
        scenario,
        client: client.clone(),
        server: server.clone(),
        addr,
        iperf_port: IPERF_PORT,
        rr_port: RR_PORT,
    }
}

/// Packets received in the server's namespace: with nothing in between,
/// what reached the server is what the path carried.
struct ServerRx;

impl Evidence for ServerRx {
    fn count(&self, _: Scenario, route: &Route) -> Result<u64> {
        route.server.rx_packets()
    }
}
