//! The overlay driver: one subnet across hosts, as Docker's `-d overlay`
//! of the cluster-store days, with Cilium's data path (tunnel mode) and a
//! real distributed store (etcd, see [`crate::cluster`]) for what the hosts
//! share.
//!
//! - **Local side**: on each host the network is what a bridge network is
//!   (the bridge driver's code, [`Bridge`]): a bridge holding the gateway
//!   address, a veth per sandbox with `from_container` on it. ARP to the
//!   gateway, masquerade by the sandbox's own host and published ports per
//!   host therefore stay exactly what they are.
//! - **Between hosts**: one `collect_md` VXLAN device per host
//!   ([`VXLAN_DEVICE`], UDP port [`VXLAN_PORT`]), made with the first
//!   overlay network and removed with the last. `from_container` sends
//!   traffic for a sandbox on another host to that host's VTEP in the
//!   network's VNI (`REMOTE_ENDPOINTS`, filled from the store by
//!   [`super::remote`]) and answers ARP for it; `from_overlay`, on the
//!   device's ingress, checks and delivers what arrives. No FDB, neighbour
//!   or route entry is ever programmed.
//! - **Addresses**: the VNI is assigned by the store when the network is
//!   created; it is kept in the local record under Docker's option name
//!   [`OPT_VNI`]. Each host leases a block of the subnet from the store and
//!   sets it as the local record's `ip_range`, so local IPAM gives out only
//!   addresses no other host can.
//! - **MTU** 1450 unless asked otherwise: 1500 less VXLAN's 50 bytes of
//!   outer headers (Ethernet 14, IPv4 20, UDP 8, VXLAN 8).
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result, bail};
use netpath_common::OverlayNetwork;

use ipnetwork::Ipv4Network;

use super::{bridge::Bridge, driver::NetworkDriver};
use crate::{
    host::Host,
    state::{self, Attachment, Intent, Network, State, Store},
    teardown::{Rollback, Teardown},
};

pub const DRIVER_NAME: &str = "overlay";

/// The network's VXLAN network identifier, as Docker's overlay driver
/// names the option; set from the store, never by users.
pub const OPT_VNI: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// The host's VXLAN device, shared by every overlay network (the VNI is
/// per packet).
pub const VXLAN_DEVICE: &str = "netpath_vxlan";

/// IANA's VXLAN port (RFC 7348) and Linux's default `dstport`; Flannel
/// uses Linux's pre-standard 8472 instead.
pub const VXLAN_PORT: u16 = netpath_common::VXLAN_PORT;

/// Ethernet, IPv4, UDP and VXLAN headers around each inner frame.
pub const VXLAN_OVERHEAD: u32 = 50;
pub const DEFAULT_MTU: u32 = 1500 - VXLAN_OVERHEAD;

/// VNIs are 24 bits; 0 is reserved.
const MAX_VNI: u32 = (1 << 24) - 1;

/// Docker's scope for networks spanning hosts through a store.
pub const SCOPE: &str = "global";

/// The overlay options, parsed once: the local side's (Docker's bridge
/// options apply: ICC, masquerade, host binding) and the VNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlay {
    pub local: Bridge,
    /// `None` until the store assigned one (a network being created).
    pub vni: Option<u32>,
}

impl Overlay {
    pub fn new(options: &BTreeMap<String, String>) -> Result<Overlay> {
        if options.contains_key(super::bridge::OPT_BRIDGE_NAME) {
            bail!("the overlay driver names its bridges itself: {} is not supported", super::bridge::OPT_BRIDGE_NAME);
        }
        let vni = match options.get(OPT_VNI) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_VNI).contains(&n) => Some(n),
                _ => bail!("invalid {OPT_VNI} {v:?}: a VXLAN network identifier, 1 to {MAX_VNI}"),
            },
        };
        Ok(Overlay { local: Bridge::new(options)?, vni })
    }

    fn vni(&self, net: &Network) -> Result<u32> {
        self.vni.with_context(|| format!("overlay network {} has no VNI yet", net.name))
    }
}

/// An overlay network as every host shares it (from the cluster store)
/// and the block of its subnet this host leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared {
    pub name: String,
    pub id: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub options: BTreeMap<String, String>,
    /// Where this host's sandboxes get their addresses.
    pub block: Ipv4Network,
}

/// The local record of a shared overlay network: the same name, ID,
/// subnet, gateway and options on every host; this host's block as the
/// address range; the VNI in [`OPT_VNI`].
pub fn local_record(shared: &Shared, state: &State) -> Result<Network> {
    if !crate::validate::contains_net(shared.subnet, shared.block) {
        bail!("block {} is not inside subnet {} of network {}", shared.block, shared.subnet, shared.name);
    }
    if let Some(other) =
        state.networks.values().find(|n| n.name != shared.name && crate::validate::overlaps(n.subnet, shared.subnet))
    {
        bail!(
            "overlay network {} ({}) overlaps with local network {} ({})",
            shared.name,
            shared.subnet,
            other.name,
            other.subnet
        );
    }
    let mut options = shared.options.clone();
    options.insert(OPT_VNI.to_string(), shared.vni.to_string());
    let driver = Overlay::new(&options)?;
    let mtu = match options.get(super::OPT_MTU) {
        Some(m) => m.parse().map_err(|_| anyhow::anyhow!("invalid {} {m:?}", super::OPT_MTU))?,
        None => DEFAULT_MTU,
    };
    crate::validate::mtu(mtu)?;
    let mut net = Network {
        name: shared.name.clone(),
        id: shared.id.clone(),
        index: super::next_index(state),
        created: state::now(),
        driver: DRIVER_NAME.to_string(),
        subnet: shared.subnet,
        gateway: shared.gateway,
        show_gateway: true,
        ip_range: Some(shared.block),
        bridge: String::new(),
        mtu,
        internal: false,
        options,
        labels: BTreeMap::new(),
        is_default: false,
    };
    driver.plan(&mut net, state)?;
    Ok(net)
}

/// Builds the local side of a shared overlay network on this host and
/// records it (its intent first), unless it is there already.
pub fn adopt(host: &Host, store: &Store, state: &mut State, shared: &Shared) -> Result<Network> {
    if let Some(net) = state.networks.get(&shared.name) {
        if net.id != shared.id {
            bail!("network {} exists on this host and is not the overlay network of that name", shared.name);
        }
        return Ok(net.clone());
    }
    let net = local_record(shared, state)?;
    store.begin(Intent::NetworkCreate { network: net.clone() })?;
    super::build(host, state, net)
}

/// The host's VXLAN device, made if missing: external (collect_md), no
/// learning, no IPv6, up, with `from_overlay` on its ingress when the data
/// path is loaded. Returns its ifindex.
pub fn ensure_device(host: &Host) -> Result<u32> {
    let index = match host.rtnl.index(VXLAN_DEVICE)? {
        Some(index) => index,
        None => {
            let index = host.rtnl.add_vxlan_external(VXLAN_DEVICE, VXLAN_PORT)?;
            Rollback::new().run(|rollback| {
                rollback.push(format!("VXLAN device {VXLAN_DEVICE}"), move || host.rtnl.delete(index));
                host.rtnl.set_alias(index, &device_tag(host))?;
                crate::sysctl::disable_ipv6(VXLAN_DEVICE)?;
                host.rtnl.set_up(index)
            })?;
            index
        }
    };
    if host.datapath.is_loaded() {
        host.datapath.attach_overlay_device(VXLAN_DEVICE)?;
    }
    Ok(index)
}

/// Removes the VXLAN device and its program link.
pub fn remove_device(host: &Host) -> Result<()> {
    let mut teardown = Teardown::new();
    teardown.step("from_overlay link", host.datapath.detach_overlay_device(VXLAN_DEVICE));
    teardown.step(format!("VXLAN device {VXLAN_DEVICE}"), host.rtnl.delete_by_name(VXLAN_DEVICE));
    teardown.finish()
}

/// The alias marking the device as this instance's (not a network's: the
/// orphan sweep leaves it to the overlay networks' removal).
fn device_tag(host: &Host) -> String {
    format!("netpath:{}:overlay", crate::state::instance(&host.roots))
}

impl NetworkDriver for Overlay {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn scope(&self) -> &'static str {
        SCOPE
    }

    fn default_mtu(&self) -> Option<u32> {
        Some(DEFAULT_MTU)
    }

    fn plan(&self, net: &mut Network, state: &State) -> Result<()> {
        self.local.plan(net, state)
    }

    /// The VXLAN device (if this is the host's first overlay network), then
    /// the bridge and the data path entries.
    fn create(&self, host: &Host, net: &Network) -> Result<()> {
        self.vni(net)?;
        let fresh_device = host.rtnl.index(VXLAN_DEVICE)?.is_none();
        ensure_device(host)?;
        Rollback::new().run(|rollback| {
            if fresh_device {
                rollback.push(format!("VXLAN device {VXLAN_DEVICE}"), || remove_device(host));
            }
            self.local.create(host, net)?;
            rollback.push(format!("bridge {}", net.bridge), || self.local.remove(host, net));
            if host.datapath.is_loaded() {
                self.sync_datapath(host, net)?;
            }
            Ok(())
        })
    }

    /// The bridge and the network's overlay entries; the VXLAN device too
    /// when no other overlay network is left on this host.
    fn remove(&self, host: &Host, net: &Network) -> Result<()> {
        let mut teardown = Teardown::new();
        teardown.step(format!("bridge {}", net.bridge), self.local.remove(host, net));
        let mut others = 0;
        if host.datapath.is_loaded() {
            if let Some(vni) = self.vni {
                teardown.step("overlay entries", host.datapath.remove_overlay_network(net.index, vni, net.subnet));
            }
            match host.datapath.overlay_network_count() {
                Ok(n) => others = n,
                Err(e) => teardown.step("counting overlay networks", Err(e)),
            }
        }
        if others == 0 {
            teardown.step("VXLAN device", remove_device(host));
        }
        teardown.finish()
    }

    /// The local side, then the endpoint record in the store (when this
    /// host has one), so the other hosts learn where the sandbox is. The
    /// sandbox's name is its namespace file's (`<run>/netns/<name>`).
    fn attach(&self, host: &Host, net: &Network, netns: &Path, att: &Attachment, default_route: bool) -> Result<()> {
        let vni = self.vni(net)?;
        self.local.attach(host, net, netns, att, default_route)?;
        if host.config.cluster.is_none() {
            return Ok(());
        }
        let name = netns.file_name().unwrap_or_default().to_string_lossy();
        Rollback::new().run(|rollback| {
            rollback.push(format!("attachment to {}", net.name), || self.local.detach(host, net, netns, att));
            super::shared::register(host, net, vni, &name, att)
        })
    }

    fn detach(&self, host: &Host, net: &Network, netns: &Path, att: &Attachment) -> Result<()> {
        let mut teardown = Teardown::new();
        if host.config.cluster.is_some() {
            teardown.step("endpoint record in the cluster store", super::shared::release(host, net, att.ip));
        }
        teardown.step("local side", self.local.detach(host, net, netns, att));
        teardown.finish()
    }

    fn unpublish(&self, host: &Host, net: &Network) -> Result<()> {
        super::shared::remove(host, net)
    }

    /// The bridge network's entries, the VXLAN device with its program,
    /// the network's overlay entries, and the other hosts' endpoints as the
    /// agent last saw them (a data path loaded afresh has none).
    fn sync_datapath(&self, host: &Host, net: &Network) -> Result<()> {
        self.local.sync_datapath(host, net)?;
        let tunnel_ifindex = ensure_device(host)?;
        host.datapath.set_overlay_network(net.index, OverlayNetwork { vni: self.vni(net)?, tunnel_ifindex })?;
        host.datapath.set_overlay_subnet(net.index, net.subnet)?;
        let Some(cluster) = &host.config.cluster else { return Ok(()) };
        let known: Vec<crate::cluster::EndpointRecord> =
            crate::cluster::agent::read_remote(&crate::cluster::agent::Files::of(&host.roots).remote);
        let remotes = super::remote::RemoteEndpoints::new(host.datapath.clone(), cluster.advertise);
        for ep in known.iter().filter(|ep| ep.vni == self.vni(net).unwrap_or(0)) {
            remotes.upsert(&super::remote::Remote::from(ep))?;
        }
        Ok(())
    }

    fn reattach(&self, host: &Host, net: &Network, att: &Attachment) -> Result<()> {
        self.local.reattach(host, net, att)
    }

    fn host_binding(&self) -> Option<Ipv4Addr> {
        self.local.host_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parsed_once() {
        let none = BTreeMap::new();
        let o = Overlay::new(&none).unwrap();
        assert_eq!(o.vni, None);
        assert!(o.local.icc && o.local.masquerade);
        let vni = BTreeMap::from([(OPT_VNI.to_string(), "4097".to_string())]);
        assert_eq!(Overlay::new(&vni).unwrap().vni, Some(4097));
        for bad in ["0", "16777216", "x", "-1"] {
            let opts = BTreeMap::from([(OPT_VNI.to_string(), bad.to_string())]);
            let e = Overlay::new(&opts).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid {OPT_VNI}")), "{e}");
        }
        let named = BTreeMap::from([(super::super::bridge::OPT_BRIDGE_NAME.to_string(), "br0".to_string())]);
        assert!(Overlay::new(&named).is_err());
        let icc = BTreeMap::from([(super::super::bridge::OPT_ICC.to_string(), "false".to_string())]);
        assert!(!Overlay::new(&icc).unwrap().local.icc);
    }

    #[test]
    fn mtu_leaves_room_for_the_outer_headers() {
        assert_eq!(DEFAULT_MTU, 1450);
        assert_eq!(Overlay::new(&BTreeMap::new()).unwrap().default_mtu(), Some(1450));
    }
}
