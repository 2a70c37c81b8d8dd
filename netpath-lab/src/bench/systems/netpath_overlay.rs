//! netpath's overlay as a cross-host system under test: etcd in the lab,
//! every host pointed at it, `netpath network create -d overlay` on host 1
//! and one sandbox per host with `netpath run -d`; each host's cluster
//! agent, following the store, programs the other host's sandbox into its
//! data path. Everything goes through netpath's command line; the bench
//! only waits for the agents and reads the data path's counters.
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use netpath_common::{Program, Reason, RemoteEndpointKey};

use crate::{
    bench::testbed::Place,
    multihost::{Host, MultiHost},
};

/// The overlay network of the bench, apart from the other systems' subnets.
pub const NETWORK: &str = "xhov";
pub const SUBNET: &str = "10.0.30.0/24";

/// How long the agents may take to learn of the other host's sandbox.
const AGENT_LIMIT: Duration = Duration::from_secs(10);

/// The sandbox name on host `i` (0-based).
fn sandbox(i: usize) -> String {
    format!("xh{}", i + 1)
}

/// Builds the overlay across the lab's first two hosts. Returns (client
/// place on host 1, server place on host 2, the server's overlay address).
pub fn build(lab: &mut MultiHost) -> Result<(Place, Place, Ipv4Addr)> {
    lab.start_etcd()?;
    lab.configure_cluster(&serde_json::json!({}))?;
    lab.host(0).netpath_ok(&["network", "create", "-d", "overlay", "--subnet", SUBNET, NETWORK])?;
    let vni = lab.host(1).overlay_vni(NETWORK)?;
    let mut addrs = Vec::new();
    for (i, h) in lab.hosts.iter().take(2).enumerate() {
        h.netpath_ok(&["run", "-d", "--name", &sandbox(i), "--network", NETWORK])?;
        addrs.push(address_of(h, &sandbox(i))?);
    }
    // Each host's agent must have put the other's sandbox in its map.
    let other = |i: usize| RemoteEndpointKey::ipv4(vni, addrs[1 - i].octets());
    lab.await_remote_endpoints(&[(0, other(0)), (1, other(1))], AGENT_LIMIT)?;
    let place = |i: usize| Place::ns(lab.host(i).roots.netns_dir().join(sandbox(i)));
    Ok((place(0), place(1), addrs[1]))
}

/// The overlay address of sandbox `name`, from `netpath network inspect`.
fn address_of(h: &Host, name: &str) -> Result<Ipv4Addr> {
    let inspect = h.netpath_ok(&["network", "inspect", NETWORK])?;
    let doc: serde_json::Value = serde_json::from_str(&inspect).context("network inspect output")?;
    let containers = doc[0]["Containers"].as_object().context("no Containers in network inspect")?;
    let ep = containers
        .values()
        .find(|c| c["Name"] == name)
        .with_context(|| format!("{name} is not on {NETWORK}: {inspect}"))?;
    let cidr = ep["IPv4Address"].as_str().context("no IPv4Address")?;
    let ip = cidr.split('/').next().unwrap_or(cidr);
    ip.parse().with_context(|| format!("{name}'s address {cidr:?}"))
}

/// Packets the data path put into the tunnel on `h` (from_container's
/// `ENCAPSULATED`) and took out of it (`DECAPSULATED`: by the uplink
/// itself, or by from_overlay behind the VXLAN device).
pub fn tunnel_counters(h: &Host) -> Result<(u64, u64)> {
    let dp = h.datapath();
    Ok((
        dp.counters(Program::FromContainer)?.packets(Reason::Encapsulated),
        dp.counters(Program::FromUplink)?.packets(Reason::Decapsulated)
            + dp.counters(Program::FromOverlay)?.packets(Reason::Decapsulated),
    ))
}
