//! Per-namespace kernel settings. `/proc/sys/net` answers for the network
//! namespace of the calling thread, so these run wherever the caller stands.
use anyhow::{Context, Result};

pub fn set(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key} = {value}"))
}

/// Docker leaves IPv6 off on interfaces of networks without IPv6; it also
/// keeps router solicitations and MLD reports off the wire.
/// A device whose MTU is below IPv6's minimum (1280) has no IPv6 settings:
/// IPv6 is off there already.
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    if !std::path::Path::new(&format!("/proc/sys/net/ipv6/conf/{ifname}")).exists() {
        return Ok(());
    }
    set(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")
}
