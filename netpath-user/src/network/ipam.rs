//! Address allocation, host-local style: the lowest free address of the
//! network's range, skipping the network, broadcast and gateway addresses.
//! Allocations persist as the sandboxes' attachments in the state.
use std::{collections::HashSet, net::Ipv4Addr};

use anyhow::{Result, bail};
use ipnetwork::Ipv4Network;

use crate::state::Network;

pub fn first_host(subnet: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Whether `ip` may be given to an interface on `subnet`.
pub fn is_host_address(subnet: Ipv4Network, ip: Ipv4Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Checks a user-chosen address, or picks the lowest free one.
pub fn allocate(
    network: &Network,
    used: impl Iterator<Item = Ipv4Addr>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let used: HashSet<Ipv4Addr> = used.collect();
    let taken = |ip: Ipv4Addr| ip == network.gateway || used.contains(&ip);
    if let Some(ip) = requested {
        if network.is_default {
            bail!("user specified IP address is supported on user defined networks only");
        }
        if !is_host_address(network.subnet, ip) {
            bail!("address {ip} is not a usable address of network {} ({})", network.name, network.subnet);
        }
        if taken(ip) {
            bail!("address {ip} is already in use on network {}", network.name);
        }
        return Ok(ip);
    }
    let range = network.ip_range.unwrap_or(network.subnet);
    let first = u32::from(range.network());
    let last = u32::from(range.broadcast());
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|&ip| is_host_address(network.subnet, ip) && !taken(ip))
        .ok_or_else(|| anyhow::anyhow!("no available addresses left on network {}", network.name))
}

/// Docker's MAC for an address: 02:42 followed by the IPv4 bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}
