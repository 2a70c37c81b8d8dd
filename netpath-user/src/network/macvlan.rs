//! The macvlan driver: each sandbox gets a macvlan interface on the
//! network's parent and sits directly on that segment, as with Docker's
//! macvlan driver. Its traffic never passes the host's stack, so no netpath
//! program sees it; the router on the segment is the gateway.
use std::{collections::BTreeMap, fs::File, path::Path};

use anyhow::{Context, Result, bail};

use super::driver::NetworkDriver;
use crate::{
    host::Host,
    link::Rtnl,
    netns,
    state::{Attachment, Network, State},
    teardown::Rollback,
};

pub const DRIVER_NAME: &str = "macvlan";

/// The host interface the sandboxes' macvlans sit on.
pub const OPT_PARENT: &str = "parent";

/// The macvlan options, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Macvlan {
    pub parent: String,
}

impl Macvlan {
    pub fn new(options: &BTreeMap<String, String>) -> Result<Macvlan> {
        let parent = options.get(OPT_PARENT).context("the macvlan driver needs -o parent=INTERFACE")?;
        crate::validate::ifname(parent)?;
        Ok(Macvlan { parent: parent.clone() })
    }
}

impl NetworkDriver for Macvlan {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    /// No host device: the gateway is a router on the parent's segment.
    fn plan(&self, net: &mut Network, _state: &State) -> Result<()> {
        net.bridge = String::new();
        Ok(())
    }

    fn create(&self, host: &Host, _net: &Network) -> Result<()> {
        if host.rtnl.index(&self.parent)?.is_none() {
            bail!("parent interface {} does not exist", self.parent);
        }
        Ok(())
    }

    /// Nothing on the host belongs to the network itself.
    fn remove(&self, _host: &Host, _net: &Network) -> Result<()> {
        Ok(())
    }

    fn attach(
        &self,
        host: &Host,
        net: &Network,
        netns_path: &Path,
        att: &Attachment,
        default_route: bool,
    ) -> Result<()> {
        let parent_index = host.rtnl.require_index(&self.parent)?;
        let tmp = format!("{}p", att.host_ifname);
        let index = host.rtnl.add_macvlan(&tmp, parent_index, net.mtu)?;
        Rollback::new().run(|rollback| {
            // By name: once moved into the sandbox it is no longer here.
            rollback.push(format!("macvlan {tmp}"), || host.rtnl.delete_by_name(&tmp));
            let ns_file = File::open(netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
            host.rtnl.move_to_netns(index, &ns_file)?;
            // Now in the sandbox, under either name.
            rollback.push(format!("macvlan {} in the sandbox", att.ifname), || {
                netns::run_in(netns_path, || {
                    let rtnl = Rtnl::new()?;
                    rtnl.delete_by_name(&tmp)?;
                    rtnl.delete_by_name(&att.ifname)
                })
            });
            netns::run_in(netns_path, || {
                super::inside::configure(&tmp, att, net.subnet.prefix(), net.gateway, default_route)
            })
            .context("configuring the sandbox interface")
        })
    }

    /// The interface lives in the sandbox: delete it there.
    fn detach(&self, _host: &Host, _net: &Network, netns_path: &Path, att: &Attachment) -> Result<()> {
        if !netns_path.exists() {
            return Ok(());
        }
        netns::run_in(netns_path, || Rtnl::new()?.delete_by_name(&att.ifname))
            .with_context(|| format!("macvlan {}", att.ifname))
    }
}
