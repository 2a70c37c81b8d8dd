//! The facts hosts share through the store, as they are written there (JSON
//! values under `/netpath/v1/`, see `store`). Pure data and arithmetic: no
//! I/O, so both the agent and the overlay driver can use them freely.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::{link::Mac, validate};

/// VNIs the store hands out: 24 bits on the wire, 0 is reserved, and the
/// low range stays free for the Flannel-style baseline (VNI 1) and users.
pub const FIRST_VNI: u32 = 4096;
pub const LAST_VNI: u32 = (1 << 24) - 1;

/// An overlay network, the same on every host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub name: String,
    /// Docker-style 64-hex-digit ID, chosen by the creating host.
    pub id: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    /// Assigned by the store on creation (`Cluster::create_network`); the
    /// value passed in is ignored.
    pub vni: u32,
    /// Each host leases a block of this prefix length out of `subnet` and
    /// gives its sandboxes addresses from it.
    pub block_prefix: u8,
    pub options: BTreeMap<String, String>,
}

impl OverlayNetwork {
    /// Flannel gives each host a /24 out of a /16; a small subnet is cut
    /// into four blocks (a /24 into /26s, 61 sandboxes per host), never
    /// into blocks smaller than a /28.
    pub fn default_block_prefix(subnet: Ipv4Network) -> u8 {
        if subnet.prefix() <= 20 { 24 } else { (subnet.prefix() + 2).min(28) }
    }

    /// What a network must satisfy before it is written.
    pub fn validate(&self) -> Result<()> {
        validate::name(&self.name)?;
        validate::usable_subnet(self.subnet)?;
        if self.subnet.ip() != self.subnet.network() {
            bail!(
                "subnet {} is not a network address (did you mean {}/{}?)",
                self.subnet,
                self.subnet.network(),
                self.subnet.prefix()
            );
        }
        if !self.subnet.contains(self.gateway)
            || self.gateway == self.subnet.network()
            || self.gateway == self.subnet.broadcast()
        {
            bail!("gateway {} is not a host address of subnet {}", self.gateway, self.subnet);
        }
        if self.block_prefix < self.subnet.prefix() || self.block_prefix > 30 {
            bail!(
                "block prefix /{} does not fit subnet {} (between /{} and /30)",
                self.block_prefix,
                self.subnet,
                self.subnet.prefix()
            );
        }
        Ok(())
    }

    /// Every block of the subnet, in address order.
    pub fn blocks(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        let size = 1u64 << (32 - self.block_prefix);
        let count = 1u64 << (self.block_prefix - self.subnet.prefix());
        let base = u64::from(u32::from(self.subnet.network()));
        (0..count).map(move |i| {
            let addr = Ipv4Addr::from((base + i * size) as u32);
            Ipv4Network::new(addr, self.block_prefix).expect("prefix checked by validate")
        })
    }

    /// The addresses of `block` a sandbox may get: not the subnet's network
    /// or broadcast address, not the gateway.
    pub fn assignable(&self, block: Ipv4Network) -> impl Iterator<Item = Ipv4Addr> + '_ {
        block.iter().filter(move |a| *a != self.subnet.network() && *a != self.subnet.broadcast() && *a != self.gateway)
    }
}

/// A member host: its ID (random, kept in its state directory) and the
/// underlay address its VXLAN device sends from and receives on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: String,
    pub vtep: Ipv4Addr,
}

/// A host's lease on one block of an overlay network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub network: String,
    pub block: Ipv4Network,
    pub host: String,
    pub vtep: Ipv4Addr,
}

/// A sandbox attached to an overlay network somewhere in the cluster:
/// what the other hosts need to reach it (VTEP, VNI, MAC) and to resolve
/// it (name, aliases).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    #[serde(with = "mac_text")]
    pub mac: Mac,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub host: String,
    pub vtep: Ipv4Addr,
}

/// MACs as `02:42:0a:00:09:02` in the store, as `ip link` shows them.
mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::{link::Mac, validate};

    pub fn serialize<S: Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&validate::format_mac(mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        validate::mac(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(subnet: &str, block: u8) -> OverlayNetwork {
        let subnet: Ipv4Network = subnet.parse().unwrap();
        OverlayNetwork {
            name: "ov".into(),
            id: "0".repeat(64),
            subnet,
            gateway: subnet.nth(1).unwrap(),
            vni: 0,
            block_prefix: block,
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn a_subnet_is_cut_into_equal_blocks() {
        let n = net("10.0.9.0/24", OverlayNetwork::default_block_prefix("10.0.9.0/24".parse().unwrap()));
        let blocks: Vec<String> = n.blocks().map(|b| b.to_string()).collect();
        assert_eq!(blocks, ["10.0.9.0/26", "10.0.9.64/26", "10.0.9.128/26", "10.0.9.192/26"]);
        assert_eq!(OverlayNetwork::default_block_prefix("10.20.0.0/16".parse().unwrap()), 24);
        assert_eq!(OverlayNetwork::default_block_prefix("10.0.9.0/28".parse().unwrap()), 28);
    }

    #[test]
    fn gateway_network_and_broadcast_are_never_assigned() {
        let n = net("10.0.9.0/24", 26);
        let first: Vec<Ipv4Addr> = n.assignable(n.blocks().next().unwrap()).collect();
        assert_eq!(first.len(), 62);
        assert_eq!(first[0], Ipv4Addr::new(10, 0, 9, 2));
        let last: Vec<Ipv4Addr> = n.assignable(n.blocks().last().unwrap()).collect();
        assert_eq!(*last.last().unwrap(), Ipv4Addr::new(10, 0, 9, 254));
    }

    #[test]
    fn bad_networks_are_refused() {
        assert!(net("10.0.9.0/24", 26).validate().is_ok());
        assert!(net("10.0.9.0/24", 23).validate().is_err());
        assert!(net("10.0.9.0/24", 31).validate().is_err());
        let mut n = net("10.0.9.0/24", 26);
        n.gateway = Ipv4Addr::new(10, 0, 8, 1);
        assert!(n.validate().is_err());
        n = net("10.0.9.0/24", 26);
        n.name = "bad/name".into();
        assert!(n.validate().is_err());
    }

    #[test]
    fn endpoint_records_read_like_documentation() {
        let ep = EndpointRecord {
            network: "ov".into(),
            vni: 4096,
            ip: Ipv4Addr::new(10, 0, 9, 2),
            mac: [0x02, 0x42, 10, 0, 9, 2],
            name: "web".into(),
            aliases: vec!["w".into()],
            host: "h1".into(),
            vtep: Ipv4Addr::new(192, 168, 100, 1),
        };
        let json = serde_json::to_string(&ep).unwrap();
        assert!(json.contains(r#""mac":"02:42:0a:00:09:02""#), "{json}");
        assert_eq!(serde_json::from_str::<EndpointRecord>(&json).unwrap(), ep);
    }
}
