//! The bridge driver: a Linux bridge per network holding the gateway address,
//! a veth pair per sandbox whose host side joins the bridge (ARP, the gateway
//! and the outside keep working the kernel way) and carries the data path
//! program that forwards sandbox-to-sandbox traffic around the bridge.
use std::{fs::File, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use netpath_common::{Endpoint, EndpointKey};

use crate::{
    host::Host,
    netns,
    state::{Attachment, Network},
    undo::Undo,
};

pub fn create(host: &Host, net: &Network) -> Result<()> {
    host.rtnl.ensure_absent(&net.bridge)?;
    let id = net.id.as_bytes();
    let hex = |i: usize| u8::from_str_radix(std::str::from_utf8(&id[i..i + 2]).unwrap_or("00"), 16).unwrap_or(0);
    let mac = [0x02, 0x42, hex(0), hex(2), hex(4), hex(6)];
    let index = host.rtnl.add_bridge(&net.bridge, net.mtu, mac)?;
    let mut undo = Undo::new();
    undo.push(format!("bridge {}", net.bridge), || host.rtnl.delete(index));
    crate::sysctl::disable_ipv6(&net.bridge)?;
    // Sandboxes reach the outside through the host, as with Docker.
    crate::sysctl::set("net.ipv4.ip_forward", "1")?;
    host.rtnl.add_address(index, net.gateway, net.subnet.prefix())?;
    host.rtnl.set_up(index)?;
    undo.commit();
    Ok(())
}

pub fn remove(host: &Host, net: &Network) -> Result<()> {
    host.rtnl.delete_by_name(&net.bridge)
}

/// Plugs a sandbox into `net`: veth pair, addressing inside the sandbox,
/// bridge port, data path program and endpoint entry. All or nothing.
pub fn attach(host: &Host, net: &Network, netns_path: &Path, att: &Attachment, default_route: bool) -> Result<()> {
    let ns_file = File::open(netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
    let host_index = host.rtnl.add_veth_into(&att.host_ifname, (&att.ifname, att.mac), net.mtu, &ns_file)?;
    let mut undo = Undo::new();
    undo.push(format!("veth {}", att.host_ifname), || host.rtnl.delete_by_name(&att.host_ifname));

    // Frames XDP redirects into the host side arrive on the sandbox side's
    // NAPI queue, which GRO provides.
    let xdp_target = host.config.uplink_xdp != crate::config::UplinkXdp::Off;
    let gateway = net.gateway;
    netns::run_in(netns_path, || {
        if xdp_target {
            crate::ethtool::set_gro(&att.ifname, true)?;
        }
        configure_inside(&att.ifname, att, net.subnet.prefix(), gateway, default_route)
    })
    .context("configuring the sandbox interface")?;

    let bridge_index = host.rtnl.require_index(&net.bridge)?;
    host.rtnl.set_master(host_index, bridge_index)?;
    crate::sysctl::disable_ipv6(&att.host_ifname)?;
    host.rtnl.set_up(host_index)?;

    host.datapath.attach_sandbox(&att.host_ifname)?;
    undo.push("data path link", || host.datapath.detach_sandbox(&att.host_ifname));
    let key = EndpointKey { ipv4: att.ip.octets() };
    host.datapath.set_endpoint(
        key,
        Endpoint {
            host_ifindex: host_index,
            network_id: net.index,
            mac: att.mac,
            flags: endpoint_flags(net.icc(), xdp_target),
        },
    )?;
    undo.commit();
    Ok(())
}

fn endpoint_flags(icc: bool, xdp_target: bool) -> u16 {
    use netpath_common::endpoint_flags::{NO_ICC, XDP_TARGET};
    (if icc { 0 } else { NO_ICC }) | (if xdp_target { XDP_TARGET } else { 0 })
}

pub(crate) fn configure_inside(
    tmp_name: &str,
    att: &Attachment,
    prefix: u8,
    gateway: Ipv4Addr,
    default_route: bool,
) -> Result<()> {
    let rtnl = crate::link::Rtnl::new()?;
    rtnl.loopback_up()?;
    let index = rtnl.require_index(tmp_name)?;
    if tmp_name != att.ifname {
        rtnl.rename(index, &att.ifname)?;
        rtnl.set_mac(index, att.mac)?;
    }
    crate::sysctl::disable_ipv6(&att.ifname)?;
    rtnl.add_address(index, att.ip, prefix)?;
    rtnl.set_up(index)?;
    if default_route {
        rtnl.add_default_route(gateway)?;
    }
    Ok(())
}

/// Unplugs a sandbox from its network. Every step runs even if an earlier
/// one failed; the first error is returned.
pub fn detach(host: &Host, att: &Attachment) -> Result<()> {
    let results = [
        host.datapath.remove_endpoint(EndpointKey { ipv4: att.ip.octets() }),
        host.datapath.detach_sandbox(&att.host_ifname),
        host.rtnl.delete_by_name(&att.host_ifname),
    ];
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}
