//! What every driver does inside the sandbox once its interface is there:
//! final name and MAC, address, link up, default route. Shared by the
//! drivers so none borrows another's internals.
use std::net::Ipv4Addr;

use anyhow::Result;

use crate::{link::Rtnl, state::Attachment};

/// Configures the interface now called `current_name` as `att` says. Runs in
/// the sandbox's network namespace.
pub fn configure(
    current_name: &str,
    att: &Attachment,
    prefix: u8,
    gateway: Ipv4Addr,
    default_route: bool,
) -> Result<()> {
    let rtnl = Rtnl::new()?;
    rtnl.loopback_up()?;
    let index = rtnl.require_index(current_name)?;
    if current_name != att.ifname {
        rtnl.rename(index, &att.ifname)?;
        rtnl.set_mac(index, att.mac)?;
    }
    crate::sysctl::disable_ipv6(&att.ifname)?;
    rtnl.add_address(index, att.ip, prefix)?;
    rtnl.set_up(index)?;
    if default_route {
        rtnl.add_default_route(gateway)?;
    }
    Ok(())
}
