//! Pure parsing and validation of what users type: names, interface names,
//! MTUs, addresses, CIDRs, MACs, KEY=VALUE lists. Nothing here touches the
//! system or imports a stateful module, so every layer (config, state,
//! networks, sandboxes) can use it without an import cycle.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use ipnetwork::Ipv4Network;

/// Longest sandbox, network or alias name: names become file names (at
/// most 255 bytes) and DNS names.
pub const MAX_NAME: usize = 128;

/// Sandbox, network and alias names, as Docker allows them.
pub fn name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME {
        let start: String = name.chars().take(16).collect();
        bail!("invalid name {start:?}...: at most {MAX_NAME} characters, not {}", name.len());
    }
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("invalid name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

pub fn ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
        bail!("invalid interface name {name:?}: 1 to 15 characters, no '/', ':' or space");
    }
    Ok(())
}

pub fn mtu(mtu: u32) -> Result<()> {
    if !(68..=65535).contains(&mtu) {
        bail!("invalid MTU {mtu}: must be between 68 and 65535");
    }
    Ok(())
}

pub fn hostname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        bail!("invalid hostname {name:?}");
    }
    Ok(())
}

/// An IPv4 address; `what` names it in the error.
pub fn ipv4(text: &str, what: &str) -> Result<Ipv4Addr> {
    text.parse::<Ipv4Addr>().map_err(|_| anyhow::anyhow!("invalid {what}: {text}"))
}

/// An IPv4 CIDR the way a user would write it, prefix length required.
pub fn cidr(text: &str) -> Result<Ipv4Network> {
    let net: Ipv4Network = text.parse().map_err(|_| anyhow::anyhow!("invalid CIDR address: {text}"))?;
    if !text.contains('/') {
        bail!("invalid CIDR address: {text} (no prefix length)");
    }
    Ok(net)
}

/// A CIDR with its host bits cleared: `10.0.0.7/24` is `10.0.0.0/24`.
pub fn subnet(text: &str) -> Result<Ipv4Network> {
    let net = cidr(text)?;
    Ok(Ipv4Network::new(net.network(), net.prefix())?)
}

/// Address blocks no network may use: they mean something on every host.
const SPECIAL_BLOCKS: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8)"),
    ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
    ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"),
    ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
    ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
];

/// A subnet a network may have: none of the special-purpose blocks.
pub fn usable_subnet(net: Ipv4Network) -> Result<()> {
    for (addr, prefix, what) in SPECIAL_BLOCKS {
        let block = Ipv4Network::new(Ipv4Addr::from(*addr), *prefix).expect("valid block");
        if overlaps(block, net) {
            bail!("invalid subnet {net}: it overlaps the {what} addresses");
        }
    }
    Ok(())
}

/// Whether `inner` lies entirely inside `outer`.
pub fn contains_net(outer: Ipv4Network, inner: Ipv4Network) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.network())
}

pub fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// `aa:bb:cc:dd:ee:ff`, unicast.
pub fn mac(text: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    let bytes: Option<Vec<u8>> =
        parts.iter().map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2)).collect();
    match bytes {
        Some(b) if b.len() == 6 && b[0] & 1 == 0 && b.iter().any(|&x| x != 0) => {
            Ok([b[0], b[1], b[2], b[3], b[4], b[5]])
        }
        _ => bail!("invalid MAC address {text:?}: six hex pairs, unicast, not all zero"),
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `cluster-store` endpoints: `etcd://HOST:PORT`, at least one. Returns
/// them as the etcd client dials them (`http://HOST:PORT`).
pub fn etcd_urls(urls: &[String]) -> Result<Vec<String>> {
    if urls.is_empty() {
        bail!("cluster-store: no etcd endpoint given");
    }
    urls.iter()
        .map(|url| {
            let bad = || anyhow::anyhow!("cluster-store {url:?}: expected etcd://HOST:PORT");
            let rest = url.strip_prefix("etcd://").ok_or_else(bad)?;
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad());
            }
            Ok(format!("http://{host}:{port}"))
        })
        .collect()
}

/// `-o KEY=VALUE` / `--label KEY=VALUE` lists; `what` names them in errors.
pub fn key_values(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid {what} {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects_like_docker() {
        assert!(name("web-1.a_b").is_ok() && name("-x").is_err() && name("a b").is_err());
        assert!(ifname("br-0123456789ab").is_ok() && ifname("0123456789abcdef").is_err());
        assert!(mtu(68).is_ok() && mtu(67).is_err());
        assert_eq!(subnet("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        assert!(cidr("10.0.0.0").is_err() && cidr("10.0.0.0/33").is_err());
        assert_eq!(mac("02:42:0a:00:00:02").unwrap(), [2, 0x42, 10, 0, 0, 2]);
        assert!(mac("01:00:00:00:00:00").is_err(), "multicast");
        assert!(mac("00:00:00:00:00:00").is_err(), "zero");
        assert!(name(&"a".repeat(MAX_NAME)).is_ok() && name(&"a".repeat(MAX_NAME + 1)).is_err());
        for bad in ["127.1.0.0/16", "224.1.0.0/24", "0.0.0.0/0", "169.254.0.0/24", "250.0.0.0/8", "0.1.0.0/16"] {
            assert!(usable_subnet(subnet(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(usable_subnet(subnet("10.140.0.0/24").unwrap()).is_ok());
        assert_eq!(format_mac(&[2, 0x42, 10, 0, 0, 2]), "02:42:0a:00:00:02");
        assert!(key_values(&["a=b=c".into()], "option").unwrap()["a"] == "b=c");
        assert!(key_values(&["=b".into()], "option").is_err());
    }
}
