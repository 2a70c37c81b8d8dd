//! Link, address and route changes over rtnetlink, in the network namespace
//! of the thread that opened the connection.
use std::{future::Future, net::Ipv4Addr, os::fd::AsRawFd};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::link::{LinkAttribute, LinkMessage},
};

pub type Mac = [u8; 6];

/// An rtnetlink connection bound to the calling thread's network namespace.
pub struct Rtnl {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

/// Packet counters of one link as the kernel reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Rtnl {
    pub fn new() -> Result<Self> {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting netlink runtime")?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
            tokio::spawn(conn);
            anyhow::Ok(handle)
        })?;
        Ok(Rtnl { rt, handle })
    }

    fn run<T>(&self, f: impl Future<Output = Result<T, rtnetlink::Error>>) -> Result<T, rtnetlink::Error> {
        self.rt.block_on(f)
    }

    fn find(&self, name: &str) -> Result<Option<LinkMessage>> {
        let h = self.handle.clone();
        let res = self.run(async move { h.link().get().match_name(name.to_string()).execute().try_next().await });
        match res {
            Ok(link) => Ok(link),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    pub fn index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.find(name)?.map(|l| l.header.index))
    }

    pub fn require_index(&self, name: &str) -> Result<u32> {
        self.index(name)?.with_context(|| format!("link {name} does not exist"))
    }

    pub fn mac(&self, name: &str) -> Result<Mac> {
        let link = self.find(name)?.with_context(|| format!("link {name} does not exist"))?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) if b.len() == 6 => Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
                _ => None,
            })
            .with_context(|| format!("link {name} has no MAC address"))
    }

    pub fn counters(&self, name: &str) -> Result<LinkCounters> {
        let link = self.find(name)?.with_context(|| format!("link {name} does not exist"))?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(LinkCounters {
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                }),
                _ => None,
            })
            .with_context(|| format!("link {name} reports no statistics"))
    }

    /// Every link of the namespace, as the kernel describes it.
    fn links(&self) -> Result<Vec<LinkMessage>> {
        let h = self.handle.clone();
        self.run(async move { h.link().get().execute().try_collect().await }).context("listing links")
    }

    pub fn link_names(&self) -> Result<Vec<String>> {
        Ok(self.links()?.iter().filter_map(ifname).collect())
    }

    /// Every link with an alias (`ip link set ... alias`): (index, name, alias).
    pub fn aliased_links(&self) -> Result<Vec<(u32, String, String)>> {
        Ok(self
            .links()?
            .iter()
            .filter_map(|l| {
                let alias = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfAlias(n) if !n.is_empty() => Some(n.clone()),
                    _ => None,
                })?;
                Some((l.header.index, ifname(l)?, alias))
            })
            .collect())
    }

    /// Sets a link's alias (IFLA_IFALIAS), a free-form label the kernel keeps.
    pub fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.set("setting link alias", msg)
    }

    pub fn add_bridge(&self, name: &str, mtu: u32, mac: Mac) -> Result<u32> {
        let h = self.handle.clone();
        let msg = LinkBridge::new(name).mtu(mtu).address(mac.to_vec()).build();
        self.run(async move { h.link().add(msg).execute().await })
            .with_context(|| format!("creating bridge {name}"))?;
        self.require_index(name)
    }

    /// Creates a veth pair; both ends start in this namespace.
    pub fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(u32, u32)> {
        let h = self.handle.clone();
        let msg = LinkVeth::new(name, peer).mtu(mtu).build();
        self.run(async move { h.link().add(msg).execute().await })
            .with_context(|| format!("creating veth pair {name}/{peer}"))?;
        let (index, peer_index) = (self.require_index(name)?, self.require_index(peer)?);
        // The veth message's MTU applies to the first end only.
        self.set_mtu(peer_index, mtu)?;
        Ok((index, peer_index))
    }

    /// A veth pair whose peer is born inside `peer_ns` with its final name,
    /// MTU and MAC: moving a device between namespaces afterwards costs
    /// RCU grace periods under the RTNL. Returns this side's index.
    pub fn add_veth_into(
        &self,
        name: &str,
        (peer, peer_mac): (&str, Mac),
        mtu: u32,
        peer_ns: &std::fs::File,
    ) -> Result<u32> {
        use rtnetlink::packet_route::link::{InfoData, InfoVeth};
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .address(peer_mac.to_vec())
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name, peer).mtu(mtu).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg))).build();
        let h = self.handle.clone();
        self.run(async move { h.link().add(msg).execute().await })
            .with_context(|| format!("creating veth pair {name}/{peer} (peer in the sandbox)"))?;
        self.require_index(name)
    }

    /// A macvlan (bridge mode) on `parent`, left in this namespace.
    pub fn add_macvlan(&self, name: &str, parent: u32, mtu: u32) -> Result<u32> {
        use rtnetlink::{LinkMacVlan, packet_route::link::MacVlanMode};
        let h = self.handle.clone();
        let msg = LinkMacVlan::new(name, parent, MacVlanMode::Bridge).mtu(mtu).build();
        self.run(async move { h.link().add(msg).execute().await })
            .with_context(|| format!("creating macvlan {name}"))?;
        self.require_index(name)
    }

    /// A `collect_md` ("external") VXLAN device sending to and listening on
    /// UDP `port`: no VNI, remote or FDB of its own; every packet's VNI and
    /// remote come from its tunnel metadata (set by a BPF program), and
    /// what arrives keeps them as metadata. No address learning.
    pub fn add_vxlan_external(&self, name: &str, port: u16) -> Result<u32> {
        use rtnetlink::{LinkMessageBuilder, LinkVxlan, packet_route::link::InfoVxlan};
        let msg = LinkMessageBuilder::<LinkVxlan>::new(name)
            .port(port)
            .learning(false)
            .append_info_data(InfoVxlan::CollectMetadata(true))
            .build();
        let h = self.handle.clone();
        self.run(async move { h.link().add(msg).execute().await })
            .with_context(|| format!("creating VXLAN device {name} (external, port {port})"))?;
        self.require_index(name)
    }

    fn set(&self, what: &str, msg: LinkMessage) -> Result<()> {
        let h = self.handle.clone();
        self.run(async move { h.link().set(msg).execute().await }).with_context(|| what.to_string())
    }

    pub fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set("attaching link to bridge", LinkUnspec::new_with_index(index).controller(master).build())
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.set("setting link up", LinkUnspec::new_with_index(index).up().build())
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set("setting MTU", LinkUnspec::new_with_index(index).mtu(mtu).build())
    }

    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.set(&format!("renaming link to {name}"), LinkUnspec::new_with_index(index).name(name).build())
    }

    pub fn set_mac(&self, index: u32, mac: Mac) -> Result<()> {
        self.set("setting MAC address", LinkUnspec::new_with_index(index).address(mac.to_vec()).build())
    }

    pub fn move_to_netns(&self, index: u32, netns: &std::fs::File) -> Result<()> {
        self.set(
            "moving link into sandbox namespace",
            LinkUnspec::new_with_index(index).setns_by_fd(netns.as_raw_fd()).build(),
        )
    }

    pub fn delete(&self, index: u32) -> Result<()> {
        let h = self.handle.clone();
        self.run(async move { h.link().del(index).execute().await }).context("deleting link")
    }

    /// Deletes the named link if it exists. A link that goes between the
    /// lookup and the delete counts as deleted: a veth dies with the
    /// namespace holding its other end, and the kernel tears namespaces
    /// down asynchronously (a CNI DEL right after the engine removed the
    /// namespace meets exactly that).
    pub fn delete_by_name(&self, name: &str) -> Result<()> {
        let Some(index) = self.index(name)? else { return Ok(()) };
        let h = self.handle.clone();
        match self.run(async move { h.link().del(index).execute().await }) {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            other => other.with_context(|| format!("deleting {name}: deleting link")),
        }
    }

    pub fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let h = self.handle.clone();
        self.run(async move { h.address().add(index, ip.into(), prefix).execute().await })
            .with_context(|| format!("adding address {ip}/{prefix}"))
    }

    /// IPv4 addresses of a link, primary first.
    pub fn ipv4_addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        self.addresses(Some(index))
    }

    /// Every IPv4 address in this namespace.
    pub fn all_ipv4_addresses(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        self.addresses(None)
    }

    fn addresses(&self, link: Option<u32>) -> Result<Vec<(Ipv4Addr, u8)>> {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
        let h = self.handle.clone();
        let msgs: Vec<AddressMessage> = self
            .run(async move {
                let mut req = h.address().get();
                if let Some(index) = link {
                    req = req.set_link_index_filter(index);
                }
                req.execute().try_collect().await
            })
            .context("listing addresses")?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        self.add_route(Ipv4Addr::UNSPECIFIED, 0, gateway)
    }

    pub fn add_route(&self, dest: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
        let h = self.handle.clone();
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dest, prefix).gateway(gateway).build();
        self.run(async move { h.route().add(msg).execute().await })
            .with_context(|| format!("adding route {dest}/{prefix} via {gateway}"))
    }

    /// Sets `lo` up, which a new namespace leaves down.
    pub fn loopback_up(&self) -> Result<()> {
        let lo = self.require_index("lo")?;
        self.set_up(lo)
    }

    pub fn ensure_absent(&self, name: &str) -> Result<()> {
        if self.index(name)?.is_some() {
            bail!("link {name} already exists");
        }
        Ok(())
    }

    /// Indexes of the links that IPv4 default routes of the main table
    /// leave through (each next hop of a multipath route), in dump order.
    pub fn default_route_links(&self) -> Result<Vec<u32>> {
        use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
        const RT_TABLE_MAIN: u32 = 254;
        let h = self.handle.clone();
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> =
            self.run(async move { h.route().get(filter).execute().try_collect().await }).context("listing routes")?;
        let mut links = Vec::new();
        for r in routes.iter().filter(|r| r.header.destination_prefix_length == 0) {
            // Tables above 255 only fit the attribute; the header then says 252 (RT_TABLE_COMPAT).
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            if table != RT_TABLE_MAIN {
                continue;
            }
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(index) => links.push(*index),
                    RouteAttribute::MultiPath(hops) => links.extend(hops.iter().map(|h| h.interface_index)),
                    _ => {}
                }
            }
        }
        links.dedup();
        Ok(links)
    }

    /// Destinations of the main table's IPv4 routes other than default
    /// routes (connected subnets included), in dump order.
    pub fn ipv4_route_destinations(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
        const RT_TABLE_MAIN: u8 = 254;
        let h = self.handle.clone();
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> =
            self.run(async move { h.route().get(filter).execute().try_collect().await }).context("listing routes")?;
        Ok(routes
            .iter()
            .filter(|r| r.header.destination_prefix_length > 0 && r.header.table == RT_TABLE_MAIN)
            .filter_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        Some((*d, r.header.destination_prefix_length))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// The name of the link with `index`, if it exists.
    pub fn name_of(&self, index: u32) -> Result<Option<String>> {
        let h = self.handle.clone();
        let res = self.run(async move { h.link().get().match_index(index).execute().try_next().await });
        let link = match res {
            Ok(link) => link,
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => None,
            Err(e) => return Err(e).with_context(|| format!("looking up link {index}")),
        };
        Ok(link.as_ref().and_then(ifname))
    }

    /// IPv4 neighbours of link `index` whose link-layer address is known
    /// (what `/proc/net/arp` flags complete): reachable, stale, delayed,
    /// probed or permanent entries.
    pub fn neighbours(&self, index: u32) -> Result<Vec<(Ipv4Addr, Mac)>> {
        use rtnetlink::packet_route::{
            AddressFamily,
            neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        };
        let h = self.handle.clone();
        let msgs: Vec<NeighbourMessage> =
            self.run(async move {
                h.neighbours().get().set_address_family(AddressFamily::Inet).execute().try_collect().await
            })
            .context("listing neighbours")?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter(|m| {
                !matches!(m.header.state, NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None)
            })
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                let mac = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                        Some([b[0], b[1], b[2], b[3], b[4], b[5]])
                    }
                    _ => None,
                })?;
                Some((ip, mac))
            })
            .collect())
    }
}

/// A link's name (IFLA_IFNAME).
fn ifname(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}
