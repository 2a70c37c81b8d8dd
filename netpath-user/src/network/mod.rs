//! Networks: validation of what users ask for, IPAM, and the drivers that
//! build them on the host.
pub mod bridge;
pub mod inspect;
pub mod ipam;
pub mod macvlan;

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Context, Result, bail};
use ipnetwork::Ipv4Network;

use crate::{
    config::{Config, parse_cidr},
    state::{self, Network, State},
};

pub const DEFAULT_NETWORK: &str = "bridge";
/// Names Docker reserves for its predefined networks and modes.
pub const RESERVED_NAMES: &[&str] = &["bridge", "host", "none", "default"];

pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
pub const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
pub const OPT_HOST_IPV4: &str = "com.docker.network.host_ipv4";
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";

/// Subnets `network create` picks from: the config's default-address-pools,
/// else Docker's (/16s of 172.17.0.0/12, then /20s of 192.168.0.0/16).
fn candidate_pools(config: &Config) -> Vec<Ipv4Network> {
    if config.address_pools.is_empty() {
        let b172 = (17u8..=31).map(|b| Ipv4Network::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid"));
        let b192 = (0u8..16).map(|i| Ipv4Network::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid"));
        return b172.chain(b192).collect();
    }
    let mut out = Vec::new();
    for (base, size) in &config.address_pools {
        let step = 1u64 << (32 - *size as u32);
        let first = u64::from(u32::from(base.network()));
        let count = 1u64 << (*size as u32 - base.prefix() as u32);
        for i in 0..count.min(65536) {
            let addr = Ipv4Addr::from((first + i * step) as u32);
            out.push(Ipv4Network::new(addr, *size).expect("valid prefix"));
        }
    }
    out
}

/// What `network create` was asked for.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub mtu: Option<u32>,
    pub internal: bool,
    pub options: Vec<String>,
    pub labels: Vec<String>,
}

pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("invalid name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
        bail!("invalid interface name {name:?}: 1 to 15 characters, no '/', ':' or space");
    }
    Ok(())
}

pub fn validate_mtu(mtu: u32) -> Result<()> {
    if !(68..=65535).contains(&mtu) {
        bail!("invalid MTU {mtu}: must be between 68 and 65535");
    }
    Ok(())
}

pub fn contains_net(outer: Ipv4Network, inner: Ipv4Network) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.network())
}

fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

fn parse_key_values(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid {what} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// Subnets already taken: every network's, and the default network's even
/// before it exists.
fn taken_subnets(state: &State, config: &Config) -> Vec<(String, Ipv4Network)> {
    let mut taken: Vec<_> = state.networks.values().map(|n| (n.name.clone(), n.subnet)).collect();
    if !state.networks.contains_key(DEFAULT_NETWORK) {
        taken.push((DEFAULT_NETWORK.to_string(), config.subnet()));
    }
    taken
}

fn next_index(state: &State) -> u32 {
    state.networks.values().map(|n| n.index).max().map_or(1, |i| i + 1)
}

/// Turns a request into a network record, checking everything first; nothing
/// on the system changes here.
pub fn plan(state: &State, config: &Config, req: &CreateRequest) -> Result<Network> {
    validate_name(&req.name)?;
    if state.networks.contains_key(&req.name) || RESERVED_NAMES.contains(&req.name.as_str()) {
        bail!("network with name {} already exists", req.name);
    }
    let driver = req.driver.as_deref().unwrap_or("bridge");
    if driver != "bridge" && driver != "macvlan" {
        bail!("driver {driver:?} is not supported (supported: bridge, macvlan)");
    }
    let options = parse_key_values(&req.options, "option")?;
    let labels = parse_key_values(&req.labels, "label")?;
    let taken = taken_subnets(state, config);

    let subnet = match &req.subnet {
        Some(s) => {
            let subnet = parse_cidr(s)?;
            let subnet = Ipv4Network::new(subnet.network(), subnet.prefix())?;
            if subnet.prefix() > 30 {
                bail!("subnet {subnet} is too small: a /30 at the least");
            }
            if let Some((name, other)) = taken.iter().find(|(_, t)| overlaps(*t, subnet)) {
                bail!("subnet {subnet} overlaps with network {name} ({other})");
            }
            subnet
        }
        None => candidate_pools(config)
            .into_iter()
            .find(|p| !taken.iter().any(|(_, t)| overlaps(*t, *p)))
            .ok_or_else(|| anyhow::anyhow!("could not find an available, non-overlapping address pool"))?,
    };
    let gateway = match &req.gateway {
        Some(g) => {
            let gw: Ipv4Addr = g.parse().map_err(|_| anyhow::anyhow!("invalid gateway address: {g}"))?;
            if !ipam::is_host_address(subnet, gw) {
                bail!("gateway {gw} is not a usable address of subnet {subnet}");
            }
            gw
        }
        None => ipam::first_host(subnet),
    };
    let ip_range = match &req.ip_range {
        Some(r) => {
            let range = parse_cidr(r)?;
            let range = Ipv4Network::new(range.network(), range.prefix())?;
            if !contains_net(subnet, range) {
                bail!("ip-range {range} is not inside subnet {subnet}");
            }
            Some(range)
        }
        None => None,
    };
    let mtu = match (req.mtu, options.get(OPT_MTU)) {
        (Some(m), _) => m,
        (None, Some(m)) => m.parse().map_err(|_| anyhow::anyhow!("invalid {OPT_MTU} {m:?}"))?,
        (None, None) => config.mtu,
    };
    validate_mtu(mtu)?;
    for key in [OPT_HOST_BINDING, OPT_HOST_IPV4] {
        if let Some(v) = options.get(key) {
            v.parse::<Ipv4Addr>().map_err(|_| anyhow::anyhow!("invalid {key} {v:?}: an IPv4 address"))?;
        }
    }
    for key in [OPT_MASQUERADE, OPT_ICC] {
        if let Some(v) = options.get(key) {
            if v != "true" && v != "false" {
                bail!("invalid {key} {v:?}: true or false");
            }
        }
    }
    let id = state::new_id();
    let bridge = match (driver, options.get(OPT_BRIDGE_NAME)) {
        ("macvlan", _) => {
            let parent = options.get(macvlan::OPT_PARENT).context("the macvlan driver needs -o parent=INTERFACE")?;
            validate_ifname(parent)?;
            String::new()
        }
        (_, Some(b)) => b.clone(),
        (_, None) => format!("br-{}", &id[..12]),
    };
    if driver == "bridge" {
        validate_ifname(&bridge)?;
        if let Some(other) = state.networks.values().find(|n| n.bridge == bridge) {
            bail!("bridge name {bridge} is already used by network {}", other.name);
        }
    }
    Ok(Network {
        name: req.name.clone(),
        id,
        index: next_index(state),
        created: state::now(),
        driver: driver.to_string(),
        subnet,
        gateway,
        show_gateway: req.gateway.is_some() || req.subnet.is_none(),
        ip_range,
        bridge,
        mtu,
        internal: req.internal,
        options,
        labels,
        is_default: false,
    })
}

/// The predefined `bridge` network as the configuration describes it.
pub fn plan_default(state: &State, config: &Config) -> Network {
    Network {
        name: DEFAULT_NETWORK.to_string(),
        id: state::new_id(),
        index: next_index(state),
        created: state::now(),
        driver: "bridge".to_string(),
        subnet: config.subnet(),
        gateway: config.default_gateway,
        show_gateway: true,
        ip_range: config.fixed_cidr,
        bridge: config.bridge.clone(),
        mtu: config.mtu,
        internal: false,
        options: BTreeMap::from([
            ("com.docker.network.bridge.default_bridge".into(), "true".into()),
            (OPT_BRIDGE_NAME.into(), config.bridge.clone()),
            (OPT_MTU.into(), config.mtu.to_string()),
            (OPT_MASQUERADE.into(), config.ip_masq.to_string()),
            (OPT_ICC.into(), config.icc.to_string()),
            (OPT_HOST_BINDING.into(), config.default_bind_ip.to_string()),
        ]),
        labels: BTreeMap::new(),
        is_default: true,
    }
}

/// Plugs a sandbox into `net` with the network's driver.
pub fn attach(
    host: &crate::host::Host,
    net: &Network,
    netns: &std::path::Path,
    att: &crate::state::Attachment,
    default_route: bool,
) -> Result<()> {
    match net.driver.as_str() {
        "macvlan" => macvlan::attach(host, net, netns, att, default_route),
        _ => bridge::attach(host, net, netns, att, default_route),
    }
}

/// Unplugs a sandbox; `driver` is its network's.
pub fn detach(
    host: &crate::host::Host,
    driver: &str,
    netns: &std::path::Path,
    att: &crate::state::Attachment,
) -> Result<()> {
    match driver {
        "macvlan" => macvlan::detach(netns, att),
        _ => bridge::detach(host, att),
    }
}

/// Creates the network on the host and records it.
pub fn create(host: &crate::host::Host, state: &mut State, req: &CreateRequest) -> Result<Network> {
    let net = plan(state, &host.config, req)?;
    if net.driver == "macvlan" {
        macvlan::create(host, &net)?;
        state.networks.insert(net.name.clone(), net.clone());
        return Ok(net);
    }
    bridge::create(host, &net)?;
    if let Err(e) = host.sync_network(&net) {
        let _ = bridge::remove(host, &net);
        return Err(e);
    }
    state.networks.insert(net.name.clone(), net.clone());
    Ok(net)
}

/// The default network, created on first use.
pub fn ensure_default(host: &crate::host::Host, state: &mut State) -> Result<()> {
    if state.networks.contains_key(DEFAULT_NETWORK) {
        return Ok(());
    }
    let net = plan_default(state, &host.config);
    bridge::create(host, &net)?;
    if let Err(e) = host.sync_network(&net) {
        let _ = bridge::remove(host, &net);
        return Err(e);
    }
    state.networks.insert(net.name.clone(), net);
    Ok(())
}

/// Removes a network that no sandbox uses.
pub fn remove(host: &crate::host::Host, state: &mut State, name: &str, allow_default: bool) -> Result<()> {
    let net = state.network(name)?.clone();
    if net.is_default && !allow_default {
        bail!("{name} is a pre-defined network and cannot be removed");
    }
    let users: Vec<&str> = state.attachments_on(name).map(|(s, _)| s.name.as_str()).collect();
    if !users.is_empty() {
        bail!("network {name} has active endpoints: {}", users.join(", "));
    }
    if net.driver == "bridge" {
        bridge::remove(host, &net)?;
    }
    if host.datapath.is_loaded() {
        host.datapath.remove_network(net.index)?;
    }
    state.networks.remove(name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, subnet: Option<&str>, gateway: Option<&str>) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            subnet: subnet.map(Into::into),
            gateway: gateway.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_bad_requests() {
        let state = State::default();
        let config = Config::default();
        assert!(plan(&state, &config, &req("n", Some("10.0.0.0/33"), None)).is_err());
        assert!(plan(&state, &config, &req("n", Some("10.0.0.0/24"), Some("10.0.1.1"))).is_err());
        assert!(plan(&state, &config, &req("n", Some("172.17.5.0/24"), None)).is_err());
        assert!(plan(&state, &config, &req("bad name", None, None)).is_err());
        assert!(plan(&state, &config, &req("bridge", None, None)).is_err());
    }

    #[test]
    fn picks_free_pool_and_first_host_gateway() {
        let mut state = State::default();
        let config = Config::default();
        let a = plan(&state, &config, &req("a", None, None)).unwrap();
        assert_eq!(a.subnet.to_string(), "172.18.0.0/16");
        assert_eq!(a.gateway, Ipv4Addr::new(172, 18, 0, 1));
        state.networks.insert(a.name.clone(), a);
        let b = plan(&state, &config, &req("b", None, None)).unwrap();
        assert_eq!(b.subnet.to_string(), "172.19.0.0/16");
        state.networks.insert(b.name.clone(), b);
        assert!(plan(&state, &config, &req("c", Some("172.19.128.0/17"), None)).is_err());
    }

    #[test]
    fn address_pools_and_fixed_cidr_from_the_config() {
        let config = Config::parse(
            r#"{"bip": "10.10.0.1/16", "fixed-cidr": "10.10.5.0/24",
                "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}]}"#,
        )
        .unwrap();
        let mut state = State::default();
        let default = plan_default(&state, &config);
        assert_eq!(ipam::allocate(&default, std::iter::empty(), None).unwrap(), Ipv4Addr::new(10, 10, 5, 0));
        state.networks.insert(default.name.clone(), default);
        let a = plan(&state, &config, &req("a", None, None)).unwrap();
        assert_eq!(a.subnet.to_string(), "10.200.0.0/24");
        state.networks.insert(a.name.clone(), a);
        assert_eq!(plan(&state, &config, &req("b", None, None)).unwrap().subnet.to_string(), "10.200.1.0/24");
    }
}
