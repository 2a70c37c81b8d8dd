//! Networks: validation of what users ask for, IPAM, and the drivers that
//! build them on the host (one file each, listed in [`driver::DRIVERS`]).
pub mod bridge;
pub mod driver;
pub mod inside;
pub mod inspect;
pub mod ipam;
pub mod macvlan;
pub mod overlay;
pub mod remote;
pub mod shared;

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use ipnetwork::Ipv4Network;

use crate::{
    config::Config,
    host::Host,
    state::{self, Intent, Network, State, Store},
    teardown::{Rollback, Teardown},
    validate,
};

/// The predefined network's name. Docker calls it `bridge`, like the driver
/// it uses, but the two are different things: never compare one with the
/// other's constant ([`driver::DEFAULT_DRIVER`] is the driver's).
pub const DEFAULT_NETWORK_NAME: &str = "bridge";
/// Names Docker reserves for its predefined networks and modes.
pub const RESERVED_NAMES: &[&str] = &[DEFAULT_NETWORK_NAME, "host", "none", "default"];

/// Docker's generic network option, understood by every driver.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

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
    /// The subnet was chosen by a container engine's IPAM (Docker's), which
    /// keeps its own networks apart: only existing networks and the host's
    /// subnets are checked, not the default network's before it exists.
    pub engine_ipam: bool,
}

/// Subnets already taken: every network's, and the default network's even
/// before it exists; each with what holds it, for the error.
fn taken_subnets(state: &State, config: &Config) -> Vec<(String, Ipv4Network)> {
    let mut taken: Vec<_> = state.networks.values().map(|n| (format!("network {}", n.name), n.subnet)).collect();
    if !state.networks.contains_key(DEFAULT_NETWORK_NAME) {
        taken.push((format!("network {DEFAULT_NETWORK_NAME}"), config.subnet()));
    }
    taken
}

/// What the host itself uses: the networks of its interfaces' addresses and
/// the destinations of its routes (default routes aside). A bridge network
/// there would answer for addresses that are elsewhere (giving a sandbox the
/// outside peer's address, say) and break NAT.
pub fn host_subnets(host: &Host) -> Result<Vec<(String, Ipv4Network)>> {
    let mut out = Vec::new();
    for (addr, prefix) in host.rtnl.all_ipv4_addresses()? {
        let net = Ipv4Network::new(addr, prefix)?;
        out.push((format!("the host's address {addr}/{prefix}"), Ipv4Network::new(net.network(), prefix)?));
    }
    for (dest, prefix) in host.rtnl.ipv4_route_destinations()? {
        out.push((format!("a host route ({dest}/{prefix})"), Ipv4Network::new(dest, prefix)?));
    }
    Ok(out)
}

pub(crate) fn next_index(state: &State) -> u32 {
    state.networks.values().map(|n| n.index).max().map_or(1, |i| i + 1)
}

/// Turns a request into a network record, checking everything first (the
/// driver parses and checks its options); nothing on the system changes
/// here.
pub fn plan(state: &State, config: &Config, req: &CreateRequest) -> Result<Network> {
    plan_on(state, config, &[], req)
}

/// [`plan`], also keeping a bridge network off `host_subnets` (see
/// [`host_subnets`]): a `--subnet` there is refused, the automatic choice
/// skips them. Networks without a device of their own (macvlan) share their
/// parent's subnet by design and are not checked.
pub fn plan_on(
    state: &State,
    config: &Config,
    host_subnets: &[(String, Ipv4Network)],
    req: &CreateRequest,
) -> Result<Network> {
    validate::name(&req.name)?;
    if state.networks.contains_key(&req.name) || RESERVED_NAMES.contains(&req.name.as_str()) {
        bail!("network with name {} already exists", req.name);
    }
    let options = validate::key_values(&req.options, "option")?;
    if options.contains_key(overlay::OPT_VNI) {
        bail!("{} is assigned by the cluster store, not given", overlay::OPT_VNI);
    }
    let labels = validate::key_values(&req.labels, "label")?;
    let driver = driver::get(req.driver.as_deref().unwrap_or(driver::DEFAULT_DRIVER), &options)?;
    let mut taken = taken_subnets(state, config);
    if req.engine_ipam {
        taken.retain(|(_, t)| state.networks.values().any(|n| n.subnet == *t));
    }
    if [bridge::DRIVER_NAME, overlay::DRIVER_NAME].contains(&driver.name()) {
        taken.extend(host_subnets.iter().cloned());
    }

    let subnet = match &req.subnet {
        Some(s) => {
            let subnet = validate::subnet(s)?;
            validate::usable_subnet(subnet)?;
            if subnet.prefix() > 30 {
                bail!("subnet {subnet} is too small: a /30 at the least");
            }
            if let Some((holder, other)) = taken.iter().find(|(_, t)| validate::overlaps(*t, subnet)) {
                bail!("subnet {subnet} overlaps with {holder} ({other})");
            }
            subnet
        }
        None => candidate_pools(config)
            .into_iter()
            .find(|p| !taken.iter().any(|(_, t)| validate::overlaps(*t, *p)))
            .ok_or_else(|| anyhow::anyhow!("could not find an available, non-overlapping address pool"))?,
    };
    let gateway = match &req.gateway {
        Some(g) => {
            let gw = validate::ipv4(g, "gateway address")?;
            if !ipam::is_host_address(subnet, gw) {
                bail!("gateway {gw} is not a usable address of subnet {subnet}");
            }
            gw
        }
        None => ipam::first_host(subnet),
    };
    let ip_range = match &req.ip_range {
        Some(r) => {
            let range = validate::subnet(r)?;
            if !validate::contains_net(subnet, range) {
                bail!("ip-range {range} is not inside subnet {subnet}");
            }
            Some(range)
        }
        None => None,
    };
    let mtu = match (req.mtu, options.get(OPT_MTU)) {
        (Some(m), _) => m,
        (None, Some(m)) => m.parse().map_err(|_| anyhow::anyhow!("invalid {OPT_MTU} {m:?}"))?,
        (None, None) => driver.default_mtu().unwrap_or(config.mtu),
    };
    validate::mtu(mtu)?;
    let mut net = Network {
        name: req.name.clone(),
        id: state::new_id(),
        index: next_index(state),
        created: state::now(),
        driver: driver.name().to_string(),
        subnet,
        gateway,
        show_gateway: req.gateway.is_some() || req.subnet.is_none(),
        ip_range,
        bridge: String::new(),
        mtu,
        internal: req.internal,
        options,
        labels,
        is_default: false,
    };
    driver.plan(&mut net, state)?;
    Ok(net)
}

/// The predefined `bridge` network as the configuration describes it.
pub fn plan_default(state: &State, config: &Config) -> Network {
    Network {
        name: DEFAULT_NETWORK_NAME.to_string(),
        id: state::new_id(),
        index: next_index(state),
        created: state::now(),
        driver: bridge::DRIVER_NAME.to_string(),
        subnet: config.subnet(),
        gateway: config.default_gateway,
        show_gateway: true,
        ip_range: config.fixed_cidr,
        bridge: config.bridge.clone(),
        mtu: config.mtu,
        internal: false,
        options: BTreeMap::from([
            (bridge::OPT_DEFAULT_BRIDGE.into(), "true".into()),
            (bridge::OPT_BRIDGE_NAME.into(), config.bridge.clone()),
            (OPT_MTU.into(), config.mtu.to_string()),
            (bridge::OPT_MASQUERADE.into(), config.ip_masq.to_string()),
            (bridge::OPT_ICC.into(), config.icc.to_string()),
            (bridge::OPT_HOST_BINDING.into(), config.default_bind_ip.to_string()),
        ]),
        labels: BTreeMap::new(),
        is_default: true,
    }
}

/// Builds a planned network on the host and records it. The caller has
/// recorded the intent (see [`crate::state::Intent`]).
pub(crate) fn build(host: &Host, state: &mut State, net: Network) -> Result<Network> {
    driver::of(&net)?.create(host, &net)?;
    state.networks.insert(net.name.clone(), net.clone());
    Ok(net)
}

/// Creates the network on the host and records it, its intent first.
/// Overlay networks are created in the cluster store, then here.
pub fn create(host: &Host, store: &Store, state: &mut State, req: &CreateRequest) -> Result<Network> {
    if req.driver.as_deref() == Some(overlay::DRIVER_NAME) {
        return shared::create(host, store, state, req);
    }
    let net = plan_on(state, &host.config, &host_subnets(host)?, req)?;
    create_planned(host, store, state, net)
}

/// Creates a network [`plan_on`] planned (not an overlay network: the
/// cluster store makes those) and records it, its intent first.
pub fn create_planned(host: &Host, store: &Store, state: &mut State, net: Network) -> Result<Network> {
    store.begin(Intent::NetworkCreate { network: net.clone() })?;
    build(host, state, net)
}

/// The default network, created on first use. Returns it when this call
/// created it.
pub fn ensure_default(host: &Host, store: &Store, state: &mut State) -> Result<Option<Network>> {
    if state.networks.contains_key(DEFAULT_NETWORK_NAME) {
        return Ok(None);
    }
    create_planned(host, store, state, plan_default(state, &host.config)).map(Some)
}

/// Docker's scope of `net` (`local`, `global`).
pub fn scope(net: &Network) -> &'static str {
    driver::of(net).map(|d| d.scope()).unwrap_or("local")
}

/// Brings the data path's view of every network up to date.
pub fn sync_datapath(host: &Host, state: &State) -> Result<()> {
    for net in state.networks.values() {
        driver::of(net)?.sync_datapath(host, net)?;
    }
    Ok(())
}

/// Loads the data path if needed and brings it up to date with `state`.
pub fn prepare_datapath(host: &Host, state: &State) -> Result<()> {
    host.prepare_datapath()?;
    sync_datapath(host, state)
}

/// Takes a network's host side and data path entry away, every step run.
/// The record stays; the caller forgets it.
pub fn destroy(host: &Host, net: &Network) -> Result<()> {
    let mut teardown = Teardown::new();
    match driver::of(net) {
        Ok(driver) => teardown.step(format!("network {}", net.name), driver.remove(host, net)),
        Err(e) => teardown.step("finding the driver", Err(e)),
    }
    if host.datapath.is_loaded() {
        teardown.step(format!("network {} policy entry", net.name), host.datapath.remove_network(net.index));
    }
    teardown.finish()
}

/// Removes a network that no sandbox uses. Every removal step runs; when one
/// failed the record stays, so that what is left (a bridge holding the
/// subnet's gateway) is not forgotten and `network rm` can be retried.
pub fn remove(host: &Host, store: &Store, state: &mut State, name: &str, allow_default: bool) -> Result<()> {
    let net = state.network(name)?.clone();
    if net.is_default && !allow_default {
        bail!("{name} is a pre-defined network and cannot be removed");
    }
    let users: Vec<&str> = state.attachments_on(name).map(|(s, _)| s.name.as_str()).collect();
    if !users.is_empty() {
        bail!("network {name} has active endpoints: {}", users.join(", "));
    }
    // A user's `network rm` (not a reset, which only clears this host)
    // also takes a network spanning hosts away from the others.
    if !allow_default {
        driver::of(&net)?.unpublish(host, &net)?;
    }
    store.begin(Intent::NetworkRemove { network: net.clone() })?;
    destroy(host, &net)?;
    state.networks.remove(name);
    Ok(())
}

/// Plugs a sandbox into `net` with the network's driver. The rollback
/// unplugs it again.
pub fn attach<'a>(
    host: &'a Host,
    net: &Network,
    netns: &std::path::Path,
    att: &crate::state::Attachment,
    default_route: bool,
    rollback: &mut Rollback<'a>,
) -> Result<()> {
    let driver = driver::of(net)?;
    driver.attach(host, net, netns, att, default_route)?;
    let (net, netns, att) = (net.clone(), netns.to_path_buf(), att.clone());
    rollback.push(format!("attachment to {}", net.name), move || driver.detach(host, &net, &netns, &att));
    Ok(())
}

/// Unplugs a sandbox from `net`, every step run.
pub fn detach(host: &Host, net: &Network, netns: &std::path::Path, att: &crate::state::Attachment) -> Result<()> {
    driver::of(net)?.detach(host, net, netns, att)
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
        let mut macvlan = req("m", None, None);
        macvlan.driver = Some("macvlan".into());
        assert!(plan(&state, &config, &macvlan).unwrap_err().to_string().contains("parent"));
        macvlan.options = vec!["parent=eth0".into()];
        assert_eq!(plan(&state, &config, &macvlan).unwrap().bridge, "", "no host device");
    }

    #[test]
    fn keeps_bridges_off_the_hosts_subnets() {
        let state = State::default();
        let config = Config::default();
        let host = [("the host's address 172.18.0.2/24".to_string(), validate::subnet("172.18.0.0/24").unwrap())];
        let e = plan_on(&state, &config, &host, &req("n", Some("172.18.0.128/25"), None)).unwrap_err();
        assert!(e.to_string().contains("overlaps with the host's address 172.18.0.2/24"), "{e}");
        let auto = plan_on(&state, &config, &host, &req("n", None, None)).unwrap();
        assert_eq!(auto.subnet.to_string(), "172.19.0.0/16", "the automatic choice skips the host's");
        assert!(plan(&state, &config, &req("n", Some("224.1.0.0/24"), None)).is_err());
        let mut macvlan = req("m", Some("172.18.0.0/24"), None);
        macvlan.driver = Some("macvlan".into());
        macvlan.options = vec!["parent=eth0".into()];
        assert!(plan_on(&state, &config, &host, &macvlan).is_ok(), "macvlan shares its parent's subnet");
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
