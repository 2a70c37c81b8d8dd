//! The bridge driver: a Linux bridge per network holding the gateway address,
//! a veth pair per sandbox whose host side joins the bridge (ARP, the gateway
//! and the outside keep working the kernel way) and carries the data path
//! program that forwards sandbox-to-sandbox traffic around the bridge.
use std::{collections::BTreeMap, fs::File, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result, bail};
use netpath_common::{Endpoint, EndpointKey, NetworkPolicy, network_flags};

use super::driver::{NetworkDriver, bool_option, ipv4_option};
use crate::{
    host::Host,
    netns,
    state::{Attachment, Network, State},
    teardown::{Rollback, Teardown},
};

pub const DRIVER_NAME: &str = "bridge";

/// Docker's bridge driver options.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const OPT_HOST_IPV4: &str = "com.docker.network.host_ipv4";
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
/// Marks the predefined network in `inspect`, as Docker does.
pub const OPT_DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";

/// The bridge options, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    /// The bridge device's name, when the user chose it.
    pub device: Option<String>,
    pub masquerade: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// Host address `-p` binds to when it names none.
    pub host_binding: Option<Ipv4Addr>,
    /// Address masquerade uses instead of the uplink's own.
    pub snat: Option<Ipv4Addr>,
}

impl Bridge {
    /// The host side's part of an attachment, once the veth exists: bridge
    /// port, up, the data path's program and endpoint entry (`attach`,
    /// `attach_external`).
    fn plug_host_side<'a>(
        &self,
        host: &'a Host,
        net: &Network,
        att: &'a Attachment,
        host_index: u32,
        rollback: &mut Rollback<'a>,
    ) -> Result<()> {
        let bridge_index = host.rtnl.require_index(&net.bridge)?;
        host.rtnl.set_master(host_index, bridge_index)?;
        crate::sysctl::disable_ipv6(&att.host_ifname)?;
        host.rtnl.set_up(host_index)?;
        host.datapath.attach_sandbox(&att.host_ifname)?;
        rollback.push("data path link", || host.datapath.detach_sandbox(&att.host_ifname));
        self.set_endpoint(host, net, att, host_index)
    }

    /// The attachment's ENDPOINTS entry.
    fn set_endpoint(&self, host: &Host, net: &Network, att: &Attachment, host_index: u32) -> Result<()> {
        let xdp_target = host.config.uplink_xdp != crate::config::UplinkXdp::Off;
        let endpoint = Endpoint {
            host_ifindex: host_index,
            network_id: net.index,
            mac: att.mac,
            flags: self.endpoint_flags(xdp_target),
        };
        host.datapath.set_endpoint(EndpointKey { ipv4: att.ip.octets() }, endpoint)
    }
    pub fn new(options: &BTreeMap<String, String>) -> Result<Bridge> {
        let device = options.get(OPT_BRIDGE_NAME).cloned();
        if let Some(d) = &device {
            crate::validate::ifname(d)?;
        }
        Ok(Bridge {
            device,
            masquerade: bool_option(options, OPT_MASQUERADE, true)?,
            icc: bool_option(options, OPT_ICC, true)?,
            host_binding: ipv4_option(options, OPT_HOST_BINDING)?,
            snat: ipv4_option(options, OPT_HOST_IPV4)?,
        })
    }

    /// The network's entry in the data path's `NETWORKS` map.
    fn policy(&self, net: &Network, gateway_mac: [u8; 6]) -> NetworkPolicy {
        let mut flags = 0;
        if self.masquerade && !net.internal {
            flags |= network_flags::MASQUERADE;
        }
        if net.internal {
            flags |= network_flags::INTERNAL;
        }
        if !self.icc {
            flags |= network_flags::NO_ICC;
        }
        NetworkPolicy {
            flags,
            subnet: net.subnet.network().octets(),
            subnet_mask: net.subnet.mask().octets(),
            gateway: net.gateway.octets(),
            snat_addr: self.snat.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
            gateway_mac,
            _pad: [0; 2],
        }
    }

    fn endpoint_flags(&self, xdp_target: bool) -> u16 {
        use netpath_common::endpoint_flags::{NO_ICC, XDP_TARGET};
        (if self.icc { 0 } else { NO_ICC }) | (if xdp_target { XDP_TARGET } else { 0 })
    }
}

impl NetworkDriver for Bridge {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn plan(&self, net: &mut Network, state: &State) -> Result<()> {
        net.bridge = self.device.clone().unwrap_or_else(|| format!("br-{}", &net.id[..12]));
        if let Some(other) = state.networks.values().find(|n| n.bridge == net.bridge) {
            bail!("bridge name {} is already used by network {}", net.bridge, other.name);
        }
        Ok(())
    }

    fn create(&self, host: &Host, net: &Network) -> Result<()> {
        host.rtnl.ensure_absent(&net.bridge)?;
        let id = net.id.as_bytes();
        let hex = |i: usize| u8::from_str_radix(std::str::from_utf8(&id[i..i + 2]).unwrap_or("00"), 16).unwrap_or(0);
        let mac = [0x02, 0x42, hex(0), hex(2), hex(4), hex(6)];
        let index = host.rtnl.add_bridge(&net.bridge, net.mtu, mac)?;
        Rollback::new().run(|rollback| {
            rollback.push(format!("bridge {}", net.bridge), move || host.rtnl.delete(index));
            // The instance's mark: found and removed by it even without a state file.
            host.rtnl.set_alias(index, &crate::state::network_tag(&host.roots, net))?;
            crate::sysctl::disable_ipv6(&net.bridge)?;
            // Sandboxes reach the outside through the host, as with Docker.
            crate::sysctl::set("net.ipv4.ip_forward", "1")?;
            host.rtnl.add_address(index, net.gateway, net.subnet.prefix())?;
            host.rtnl.set_up(index)?;
            if host.datapath.is_loaded() {
                self.sync_datapath(host, net)?;
            }
            Ok(())
        })
    }

    fn remove(&self, host: &Host, net: &Network) -> Result<()> {
        host.rtnl.delete_by_name(&net.bridge).with_context(|| format!("bridge {}", net.bridge))
    }

    /// Veth pair, addressing inside the sandbox, bridge port, data path
    /// program and endpoint entry.
    fn attach(
        &self,
        host: &Host,
        net: &Network,
        netns_path: &Path,
        att: &Attachment,
        default_route: bool,
    ) -> Result<()> {
        let ns_file = File::open(netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
        let host_index = host.rtnl.add_veth_into(&att.host_ifname, (&att.ifname, att.mac), net.mtu, &ns_file)?;
        Rollback::new().run(|rollback| {
            rollback.push(format!("veth {}", att.host_ifname), || host.rtnl.delete_by_name(&att.host_ifname));
            // Frames XDP redirects into the host side arrive on the sandbox
            // side's NAPI queue, which GRO provides.
            let xdp_target = host.config.uplink_xdp != crate::config::UplinkXdp::Off;
            netns::run_in(netns_path, || {
                if xdp_target {
                    crate::ethtool::set_gro(&att.ifname, true)?;
                }
                super::inside::configure(&att.ifname, att, net.subnet.prefix(), net.gateway, default_route)
            })
            .context("configuring the sandbox interface")?;

            self.plug_host_side(host, net, att, host_index, rollback)
        })
    }

    /// As [`attach`](NetworkDriver::attach), except that both ends are made
    /// here and nothing is configured inside: the engine moves `peer` into
    /// its container, renames it and gives it the address.
    fn attach_external(&self, host: &Host, net: &Network, att: &Attachment, peer: &str) -> Result<()> {
        let (host_index, peer_index) = host.rtnl.add_veth(&att.host_ifname, peer, net.mtu)?;
        Rollback::new().run(|rollback| {
            rollback.push(format!("veth {}", att.host_ifname), || host.rtnl.delete_by_name(&att.host_ifname));
            // The data path rewrites frames to this MAC: the engine keeps it
            // (it is the endpoint's, as the plugin reported it).
            host.rtnl.set_mac(peer_index, att.mac)?;
            let xdp_target = host.config.uplink_xdp != crate::config::UplinkXdp::Off;
            if xdp_target {
                // Device features travel with it into the container.
                crate::ethtool::set_gro(peer, true)?;
            }
            self.plug_host_side(host, net, att, host_index, rollback)
        })
    }

    fn detach(&self, host: &Host, _net: &Network, _netns: &Path, att: &Attachment) -> Result<()> {
        let mut teardown = Teardown::new();
        // Without pins (after a reboot) there is no entry to remove.
        if host.datapath.is_loaded() {
            teardown.step("endpoint entry", host.datapath.remove_endpoint(EndpointKey { ipv4: att.ip.octets() }));
        }
        teardown.step("data path link", host.datapath.detach_sandbox(&att.host_ifname));
        teardown.step(format!("veth {}", att.host_ifname), host.rtnl.delete_by_name(&att.host_ifname));
        teardown.finish()
    }

    fn reattach(&self, host: &Host, net: &Network, att: &Attachment) -> Result<()> {
        let host_index = host.rtnl.require_index(&att.host_ifname)?;
        host.datapath.attach_sandbox(&att.host_ifname)?;
        self.set_endpoint(host, net, att, host_index)
    }

    fn sync_datapath(&self, host: &Host, net: &Network) -> Result<()> {
        let gateway_mac = host.rtnl.mac(&net.bridge).unwrap_or_default();
        host.datapath.set_network(net.index, self.policy(net, gateway_mac))
    }

    fn host_binding(&self) -> Option<Ipv4Addr> {
        self.host_binding
    }
}
