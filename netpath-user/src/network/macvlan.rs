//! The macvlan driver: each sandbox gets a macvlan interface on the
//! network's parent and sits directly on that segment, as with Docker's
//! macvlan driver. Its traffic never passes the host's stack, so no netpath
//! program sees it; the router on the segment is the gateway.
use std::fs::File;

use anyhow::{Context, Result, bail};

use crate::{
    host::Host,
    netns,
    state::{Attachment, Network},
};

pub const OPT_PARENT: &str = "parent";

pub fn create(host: &Host, net: &Network) -> Result<()> {
    let parent = net.options.get(OPT_PARENT).context("the macvlan driver needs -o parent=INTERFACE")?;
    if host.rtnl.index(parent)?.is_none() {
        bail!("parent interface {parent} does not exist");
    }
    Ok(())
}

pub fn attach(
    host: &Host,
    net: &Network,
    netns_path: &std::path::Path,
    att: &Attachment,
    default_route: bool,
) -> Result<()> {
    let parent = net.options.get(OPT_PARENT).context("macvlan network without a parent")?;
    let parent_index = host.rtnl.require_index(parent)?;
    let tmp = format!("{}p", att.host_ifname);
    let index = host.rtnl.add_macvlan(&tmp, parent_index, net.mtu)?;
    let ns_file = File::open(netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
    if let Err(e) = host.rtnl.move_to_netns(index, &ns_file) {
        let _ = host.rtnl.delete(index);
        return Err(e);
    }
    let gateway = net.gateway;
    let configured = netns::run_in(netns_path, || {
        super::bridge::configure_inside(&tmp, att, net.subnet.prefix(), gateway, default_route)
    });
    if configured.is_err() {
        let _ = netns::run_in(netns_path, || {
            let rtnl = crate::link::Rtnl::new()?;
            rtnl.delete_by_name(&tmp)?;
            rtnl.delete_by_name(&att.ifname)
        });
    }
    configured.context("configuring the sandbox interface")
}

/// The interface lives in the sandbox: delete it there.
pub fn detach(netns_path: &std::path::Path, att: &Attachment) -> Result<()> {
    if !netns_path.exists() {
        return Ok(());
    }
    netns::run_in(netns_path, || crate::link::Rtnl::new()?.delete_by_name(&att.ifname))
}
