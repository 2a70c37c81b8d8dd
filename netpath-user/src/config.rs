//! The instance configuration, read from a Docker daemon.json as is: the keys
//! netpath understands shape the default `bridge` network, every other key is
//! reported and ignored.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context, Result, bail};
use ipnetwork::Ipv4Network;
use serde::Deserialize;

use crate::validate;

pub const DEFAULT_BRIDGE: &str = "netpath0";
pub const DEFAULT_BIP: &str = "172.17.0.1/16";
pub const DEFAULT_MTU: u32 = 1500;
/// How long a silent host stays a cluster member (Flannel renews its
/// subnet lease well before expiry; the overlay wants a dead host gone fast).
pub const DEFAULT_CLUSTER_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DaemonJson {
    bridge: Option<String>,
    bip: Option<String>,
    fixed_cidr: Option<String>,
    mtu: Option<u32>,
    default_gateway: Option<Ipv4Addr>,
    ip_masq: Option<bool>,
    ip: Option<Ipv4Addr>,
    icc: Option<bool>,
    dns: Option<Vec<Ipv4Addr>>,
    dns_search: Option<Vec<String>>,
    default_address_pools: Option<Vec<AddressPool>>,
    uplinks: Option<Vec<String>>,
    conntrack_max: Option<u32>,
    conntrack_timeouts: Option<Timeouts>,
    uplink_xdp: Option<UplinkXdp>,
    #[serde(flatten)]
    cluster: ClusterKeys,
}

/// daemon.json's cluster keys: part of `DaemonJson`, and read on their own
/// by `load_cluster`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterKeys {
    cluster_store: Option<StoreUrls>,
    cluster_advertise: Option<String>,
    cluster_lease_ttl: Option<u64>,
}

/// `cluster-store`: one `etcd://HOST:PORT` or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StoreUrls {
    One(String),
    Many(Vec<String>),
}

/// Where the overlay's shared facts live and how this host takes part
/// (Docker's `cluster-store` / `cluster-advertise`, plus netpath's
/// `cluster-lease-ttl` in seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `etcd://HOST:PORT`, as configured.
    pub store: Vec<String>,
    /// This host's underlay address: its VTEP.
    pub advertise: Ipv4Addr,
    /// How long this host stays a member without renewing.
    pub lease_ttl: std::time::Duration,
}

/// Whether the uplinks get the XDP program in front of TC (netpath's own
/// key): `auto` is native mode where the driver has it, generic otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UplinkXdp {
    #[default]
    Off,
    Auto,
    Native,
    Generic,
}

/// One entry of Docker's `default-address-pools`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressPool {
    base: String,
    size: u8,
}

/// Conntrack timeouts in seconds (netpath's own key).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Timeouts {
    tcp_syn: Option<u32>,
    tcp_established: Option<u32>,
    tcp_closing: Option<u32>,
    udp: Option<u32>,
    icmp: Option<u32>,
}

/// Docker's keys netpath honours, then netpath's own.
const KNOWN_KEYS: &[&str] = &[
    "bridge",
    "bip",
    "fixed-cidr",
    "mtu",
    "default-gateway",
    "ip-masq",
    "ip",
    "icc",
    "dns",
    "dns-search",
    "default-address-pools",
    "uplinks",
    "conntrack-max",
    "conntrack-timeouts",
    "uplink-xdp",
    "cluster-store",
    "cluster-advertise",
    "cluster-lease-ttl",
];

/// What the default `bridge` network looks like on this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub bridge: String,
    /// The bridge's own address; its network is the subnet.
    pub bip: Ipv4Network,
    pub fixed_cidr: Option<Ipv4Network>,
    pub mtu: u32,
    /// The gateway sandboxes route through; the bridge address unless set.
    pub default_gateway: Ipv4Addr,
    /// Masquerade for the default network.
    pub ip_masq: bool,
    /// Host address published ports bind to when `-p` names none.
    pub default_bind_ip: Ipv4Addr,
    /// Interfaces to the outside; those holding default routes when unset.
    pub uplinks: Option<Vec<String>>,
    pub conntrack_max: Option<u32>,
    pub timeouts: netpath_common::DatapathConfig,
    pub uplink_xdp: UplinkXdp,
    /// Inter-container communication on the default network.
    pub icc: bool,
    /// Upstream resolvers; the host's resolv.conf when empty.
    pub dns: Vec<Ipv4Addr>,
    pub dns_search: Vec<String>,
    /// (base, prefix of each subnet carved from it) for `network create`
    /// without `--subnet`; Docker's defaults when empty.
    pub address_pools: Vec<(Ipv4Network, u8)>,
    /// The cluster store, when this host takes part in overlay networks.
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let bip: Ipv4Network = DEFAULT_BIP.parse().expect("valid default bip");
        Config {
            bridge: DEFAULT_BRIDGE.into(),
            bip,
            fixed_cidr: None,
            mtu: DEFAULT_MTU,
            default_gateway: bip.ip(),
            ip_masq: true,
            default_bind_ip: Ipv4Addr::UNSPECIFIED,
            uplinks: None,
            conntrack_max: None,
            timeouts: netpath_common::DatapathConfig::default(),
            uplink_xdp: UplinkXdp::Off,
            icc: true,
            dns: Vec::new(),
            dns_search: Vec::new(),
            address_pools: Vec::new(),
            cluster: None,
        }
    }
}

impl Config {
    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Config::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config> {
        let raw: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).context("not a JSON object")?;
        for key in raw.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            eprintln!("warning: config key {key:?} is not supported by netpath and is ignored");
        }
        let json: DaemonJson = serde_json::from_value(serde_json::Value::Object(raw))?;
        let mut config = Config::default();
        if let Some(bridge) = json.bridge {
            validate::ifname(&bridge)?;
            config.bridge = bridge;
        }
        if let Some(bip) = json.bip {
            config.bip = validate::cidr(&bip).context("bip")?;
            if config.bip.ip() == config.bip.network() {
                bail!("bip {bip} must be the bridge's address, not the network's");
            }
            config.default_gateway = config.bip.ip();
        }
        if let Some(fixed) = json.fixed_cidr {
            let fixed = validate::cidr(&fixed).context("fixed-cidr")?;
            if !validate::contains_net(config.subnet(), fixed) {
                bail!("fixed-cidr {fixed} is not inside the bridge subnet {}", config.subnet());
            }
            config.fixed_cidr = Some(fixed);
        }
        if let Some(mtu) = json.mtu {
            validate::mtu(mtu)?;
            config.mtu = mtu;
        }
        if let Some(gw) = json.default_gateway {
            if !config.subnet().contains(gw) {
                bail!("default-gateway {gw} is outside the bridge subnet {}", config.subnet());
            }
            config.default_gateway = gw;
        }
        config.ip_masq = json.ip_masq.unwrap_or(true);
        config.icc = json.icc.unwrap_or(true);
        config.dns = json.dns.unwrap_or_default();
        config.dns_search = json.dns_search.unwrap_or_default();
        for pool in json.default_address_pools.unwrap_or_default() {
            let base = validate::cidr(&pool.base).context("default-address-pools")?;
            if pool.size < base.prefix() || pool.size > 30 {
                bail!("default-address-pools: size {} does not fit base {}", pool.size, pool.base);
            }
            config.address_pools.push((base, pool.size));
        }
        config.default_bind_ip = json.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        config.uplinks = json.uplinks;
        config.uplink_xdp = json.uplink_xdp.unwrap_or_default();
        if let Some(max) = json.conntrack_max {
            if !(1024..=16_777_216).contains(&max) {
                bail!("conntrack-max {max} must be between 1024 and 16777216");
            }
            config.conntrack_max = Some(max);
        }
        if let Some(t) = json.conntrack_timeouts {
            let c = &mut config.timeouts;
            for (field, value) in [
                (&mut c.ct_syn_timeout_s, t.tcp_syn),
                (&mut c.ct_established_timeout_s, t.tcp_established),
                (&mut c.ct_closing_timeout_s, t.tcp_closing),
                (&mut c.ct_udp_timeout_s, t.udp),
                (&mut c.ct_icmp_timeout_s, t.icmp),
            ] {
                if let Some(v) = value {
                    if v == 0 {
                        bail!("conntrack timeouts must be at least one second");
                    }
                    *field = v;
                }
            }
        }
        config.cluster = cluster(json.cluster)?;
        Ok(config)
    }

    pub fn subnet(&self) -> Ipv4Network {
        Ipv4Network::new(self.bip.network(), self.bip.prefix()).expect("prefix already valid")
    }
}

/// Only the cluster keys of the daemon.json at `path`, without a word
/// about the others (every command asks, see `cluster::process::ensure`;
/// the command itself reports the rest). Missing file: none.
pub fn load_cluster(path: &Path) -> Result<Option<ClusterConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let keys: ClusterKeys = serde_json::from_str(&text).with_context(|| format!("in {}", path.display()))?;
    cluster(keys)
}

/// The cluster keys go together: a store without this host's address (or
/// the reverse) is a mistake, not a half-configured cluster.
fn cluster(
    ClusterKeys { cluster_store: store, cluster_advertise: advertise, cluster_lease_ttl: ttl }: ClusterKeys,
) -> Result<Option<ClusterConfig>> {
    let store = match store {
        None => {
            if advertise.is_some() || ttl.is_some() {
                bail!("cluster-advertise and cluster-lease-ttl need cluster-store (etcd://HOST:PORT)");
            }
            return Ok(None);
        }
        Some(StoreUrls::One(url)) => vec![url],
        Some(StoreUrls::Many(urls)) => urls,
    };
    validate::etcd_urls(&store)?;
    let advertise = advertise
        .ok_or_else(|| anyhow::anyhow!("cluster-store needs cluster-advertise: this host's underlay address"))?;
    // Docker also took "ADDR:PORT"; the VXLAN port is fixed, so only the address counts.
    let addr = advertise.split_once(':').map_or(advertise.as_str(), |(a, _)| a);
    let advertise = validate::ipv4(addr, "cluster-advertise address")?;
    if advertise.is_unspecified() || advertise.is_loopback() || advertise.is_multicast() || advertise.is_broadcast() {
        bail!("cluster-advertise {advertise}: must be this host's own unicast underlay address");
    }
    let ttl = ttl.unwrap_or(DEFAULT_CLUSTER_LEASE_TTL.as_secs());
    if !(3..=3600).contains(&ttl) {
        bail!("cluster-lease-ttl {ttl}: must be between 3 and 3600 seconds");
    }
    Ok(Some(ClusterConfig { store, advertise, lease_ttl: std::time::Duration::from_secs(ttl) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_json_shapes_the_default_network() {
        let c = Config::parse(r#"{"bip":"192.168.10.1/24","mtu":1400,"log-driver":"json-file"}"#).unwrap();
        assert_eq!(c.subnet().to_string(), "192.168.10.0/24");
        assert_eq!(c.default_gateway, Ipv4Addr::new(192, 168, 10, 1));
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.bridge, DEFAULT_BRIDGE);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Config::parse(r#"{"bip":"192.168.10.0/24"}"#).is_err());
        assert!(Config::parse(r#"{"bip":"192.168.10.1/24","fixed-cidr":"10.0.0.0/24"}"#).is_err());
        assert!(Config::parse(r#"{"mtu":20}"#).is_err());
        assert!(Config::parse(r#"{"bip":"nonsense"}"#).is_err());
        assert!(Config::parse(r#"{"uplink-xdp":"fast"}"#).is_err());
        assert_eq!(Config::parse(r#"{"uplink-xdp":"auto"}"#).unwrap().uplink_xdp, UplinkXdp::Auto);
    }

    #[test]
    fn cluster_keys_are_docker_s_old_ones() {
        assert_eq!(Config::parse("{}").unwrap().cluster, None);
        let c = Config::parse(r#"{"cluster-store":"etcd://10.0.0.1:2379","cluster-advertise":"10.0.0.2"}"#).unwrap();
        let c = c.cluster.unwrap();
        assert_eq!(c.store, ["etcd://10.0.0.1:2379"]);
        assert_eq!(c.advertise, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(c.lease_ttl, DEFAULT_CLUSTER_LEASE_TTL);
        let c = Config::parse(
            r#"{"cluster-store":["etcd://a:2379","etcd://b:2379"],"cluster-advertise":"10.0.0.2:2376","cluster-lease-ttl":5}"#,
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!((c.store.len(), c.advertise, c.lease_ttl.as_secs()), (2, Ipv4Addr::new(10, 0, 0, 2), 5));
        for bad in [
            r#"{"cluster-store":"consul://a:8500","cluster-advertise":"10.0.0.2"}"#,
            r#"{"cluster-store":"etcd://a:2379"}"#,
            r#"{"cluster-advertise":"10.0.0.2"}"#,
            r#"{"cluster-store":"etcd://a:2379","cluster-advertise":"eth0"}"#,
            r#"{"cluster-store":"etcd://a:2379","cluster-advertise":"127.0.0.1"}"#,
            r#"{"cluster-store":"etcd://a:2379","cluster-advertise":"10.0.0.2","cluster-lease-ttl":1}"#,
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert!(!format!("{err:#}").contains('\n'), "one line: {err:#}");
        }
    }
}
