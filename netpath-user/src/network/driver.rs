//! The network driver interface, as netavark's `network/driver.rs` has it:
//! a driver parses and checks its options once, into typed configuration,
//! when it is constructed, and then creates, removes, attaches and detaches.
//!
//! [`DRIVERS`] is the one place a driver name turns into an implementation
//! ([`get`] looks names up there). Adding a driver is one new file
//! implementing [`NetworkDriver`] and one line in [`DRIVERS`].
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use anyhow::{Result, bail};

use super::{bridge::Bridge, macvlan::Macvlan, overlay::Overlay};
use crate::{
    host::Host,
    state::{Attachment, Network, State},
};

/// The driver `network create` uses without `-d`, as with Docker.
pub const DEFAULT_DRIVER: &str = super::bridge::DRIVER_NAME;

pub trait NetworkDriver {
    /// Docker's name of the driver, as `network ls` and `inspect` show it.
    fn name(&self) -> &'static str;

    /// Docker's scope: `local`, or `global` for a network spanning hosts.
    fn scope(&self) -> &'static str {
        "local"
    }

    /// The MTU when neither `--mtu` nor the option names one; `None`: the
    /// configuration's.
    fn default_mtu(&self) -> Option<u32> {
        None
    }

    /// Completes a planned network record with what this driver decides
    /// (e.g. the bridge device's name) and checks it against the networks
    /// that exist. Changes nothing on the system.
    fn plan(&self, net: &mut Network, state: &State) -> Result<()>;

    /// Builds the network's host side. All or nothing.
    fn create(&self, host: &Host, net: &Network) -> Result<()>;

    /// Removes the network's host side; a part already gone counts as
    /// removed.
    fn remove(&self, host: &Host, net: &Network) -> Result<()>;

    /// Plugs the sandbox whose network namespace is at `netns` in, as `att`
    /// describes. All or nothing.
    fn attach(&self, host: &Host, net: &Network, netns: &Path, att: &Attachment, default_route: bool) -> Result<()>;

    /// Plugs in a sandbox whose namespace a container engine owns and
    /// enters itself (Docker's remote driver protocol): the pair is made in
    /// the host namespace, its sandbox end named `peer` with the
    /// attachment's MAC and left there for the engine to move, rename and
    /// address. [`NetworkDriver::detach`] unplugs it. All or nothing.
    fn attach_external(&self, _host: &Host, net: &Network, _att: &Attachment, _peer: &str) -> Result<()> {
        bail!("the {} driver cannot wire a container engine's namespace (network {})", self.name(), net.name)
    }

    /// Unplugs a sandbox: every step runs, every failure is returned (see
    /// [`crate::teardown`]); a part already gone counts as removed.
    fn detach(&self, host: &Host, net: &Network, netns: &Path, att: &Attachment) -> Result<()>;

    /// `network rm` of a network that spans hosts: takes it away from every
    /// host (the cluster store), refusing while any host uses it. Local
    /// networks have nothing to do.
    fn unpublish(&self, _host: &Host, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Brings the data path's view of the network up to date (its policy
    /// entry), for drivers whose traffic passes netpath's programs. The
    /// data path is loaded when this is called.
    fn sync_datapath(&self, _host: &Host, _net: &Network) -> Result<()> {
        Ok(())
    }

    /// Puts an existing attachment back into a data path loaded afresh
    /// (after the pins were lost): its program link and entries. The
    /// devices are in place.
    fn reattach(&self, _host: &Host, _net: &Network, _att: &Attachment) -> Result<()> {
        Ok(())
    }

    /// The host address `-p` binds to on this network when it names none.
    fn host_binding(&self) -> Option<Ipv4Addr> {
        None
    }
}

/// Builds a driver from its options (Docker's spellings, as given with
/// `-o`), parsing and checking them.
type Open = fn(&BTreeMap<String, String>) -> Result<Box<dyn NetworkDriver>>;

/// Every driver by name: one line each.
pub const DRIVERS: &[(&str, Open)] = &[
    (super::bridge::DRIVER_NAME, |options| Ok(Box::new(Bridge::new(options)?))),
    (super::macvlan::DRIVER_NAME, |options| Ok(Box::new(Macvlan::new(options)?))),
    (super::overlay::DRIVER_NAME, |options| Ok(Box::new(Overlay::new(options)?))),
];

/// The implementation of driver `name`, its `options` parsed and checked.
/// Unknown drivers are refused.
pub fn get(name: &str, options: &BTreeMap<String, String>) -> Result<Box<dyn NetworkDriver>> {
    match DRIVERS.iter().find(|(n, _)| *n == name) {
        Some((_, open)) => open(options),
        None => {
            let supported: Vec<&str> = DRIVERS.iter().map(|(n, _)| *n).collect();
            bail!("network driver {name:?} is not supported (supported: {})", supported.join(", "))
        }
    }
}

/// The driver of an existing network.
pub fn of(net: &Network) -> Result<Box<dyn NetworkDriver>> {
    get(&net.driver, &net.options).map_err(|e| e.context(format!("network {}", net.name)))
}

/// Parses a `true`/`false` option; absent means `default`.
pub fn bool_option(options: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool> {
    match options.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => bail!("invalid {key} {v:?}: true or false"),
    }
}

/// Parses an IPv4 address option.
pub fn ipv4_option(options: &BTreeMap<String, String>, key: &str) -> Result<Option<Ipv4Addr>> {
    options
        .get(key)
        .map(|v| v.parse::<Ipv4Addr>().map_err(|_| anyhow::anyhow!("invalid {key} {v:?}: an IPv4 address")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_maps_names_to_drivers() {
        let none = BTreeMap::new();
        assert_eq!(get("bridge", &none).unwrap().name(), "bridge");
        let parent = BTreeMap::from([("parent".to_string(), "eth0".to_string())]);
        assert_eq!(get("macvlan", &parent).unwrap().name(), "macvlan");
        assert_eq!(get("overlay", &none).unwrap().name(), "overlay");
        let e = get("ipvlan", &none).err().unwrap().to_string();
        assert_eq!(e, r#"network driver "ipvlan" is not supported (supported: bridge, macvlan, overlay)"#);
    }

    #[test]
    fn options_are_parsed_once_and_checked() {
        let bad = BTreeMap::from([("com.docker.network.bridge.enable_icc".to_string(), "yes".to_string())]);
        assert!(get("bridge", &bad).is_err());
        let bad = BTreeMap::from([("com.docker.network.bridge.host_binding_ipv4".to_string(), "x".to_string())]);
        assert!(get("bridge", &bad).is_err());
        assert!(get("macvlan", &BTreeMap::new()).err().unwrap().to_string().contains("parent"));
        let bad = BTreeMap::from([("parent".to_string(), "a/b".to_string())]);
        assert!(get("macvlan", &bad).is_err());
    }
}
