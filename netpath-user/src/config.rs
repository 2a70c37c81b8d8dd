//! The instance configuration, read from a Docker daemon.json as is: the keys
//! netpath understands shape the default `bridge` network, every other key is
//! reported and ignored.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context, Result, bail};
use ipnetwork::Ipv4Network;
use serde::Deserialize;

pub const DEFAULT_BRIDGE: &str = "netpath0";
pub const DEFAULT_BIP: &str = "172.17.0.1/16";
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DaemonJson {
    bridge: Option<String>,
    bip: Option<String>,
    fixed_cidr: Option<String>,
    mtu: Option<u32>,
    default_gateway: Option<Ipv4Addr>,
}

const KNOWN_KEYS: &[&str] = &["bridge", "bip", "fixed-cidr", "mtu", "default-gateway"];

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
            crate::network::validate_ifname(&bridge)?;
            config.bridge = bridge;
        }
        if let Some(bip) = json.bip {
            config.bip = parse_cidr(&bip).context("bip")?;
            if config.bip.ip() == config.bip.network() {
                bail!("bip {bip} must be the bridge's address, not the network's");
            }
            config.default_gateway = config.bip.ip();
        }
        if let Some(fixed) = json.fixed_cidr {
            let fixed = parse_cidr(&fixed).context("fixed-cidr")?;
            if !crate::network::contains_net(config.subnet(), fixed) {
                bail!(
                    "fixed-cidr {fixed} is not inside the bridge subnet {}",
                    config.subnet()
                );
            }
            config.fixed_cidr = Some(fixed);
        }
        if let Some(mtu) = json.mtu {
            crate::network::validate_mtu(mtu)?;
            config.mtu = mtu;
        }
        if let Some(gw) = json.default_gateway {
            if !config.subnet().contains(gw) {
                bail!(
                    "default-gateway {gw} is outside the bridge subnet {}",
                    config.subnet()
                );
            }
            config.default_gateway = gw;
        }
        Ok(config)
    }

    pub fn subnet(&self) -> Ipv4Network {
        Ipv4Network::new(self.bip.network(), self.bip.prefix()).expect("prefix already valid")
    }
}

/// Parses an IPv4 CIDR the way a user would write it; host bits are cleared.
pub fn parse_cidr(text: &str) -> Result<Ipv4Network> {
    let net: Ipv4Network = text
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid CIDR address: {text}"))?;
    if !text.contains('/') {
        bail!("invalid CIDR address: {text} (no prefix length)");
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_json_shapes_the_default_network() {
        let c = Config::parse(r#"{"bip":"192.168.10.1/24","mtu":1400,"log-driver":"json-file"}"#)
            .unwrap();
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
    }
}
