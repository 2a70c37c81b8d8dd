//! The host namespace netpath manages: its configuration, rtnetlink handle
//! and data path, opened once per command.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::{
    config::Config,
    datapath::{Datapath, LoadOptions},
    link::Rtnl,
    paths::Roots,
};

pub struct Host {
    pub roots: Roots,
    pub config: Config,
    pub rtnl: Rtnl,
    pub datapath: Datapath,
}

impl Host {
    pub fn open(roots: Roots) -> Result<Host> {
        let config = Config::load(&roots.config)?;
        Ok(Host { datapath: Datapath::at(&roots.bpf), rtnl: Rtnl::new()?, config, roots })
    }

    /// Loads the data path if needed and brings its view of the uplinks and
    /// host addresses up to date (the networks' entries are their drivers'
    /// business: `network::prepare_datapath`).
    pub fn prepare_datapath(&self) -> Result<()> {
        let mut config = self.config.timeouts;
        config.host_netns_cookie = 0;
        self.datapath.ensure_loaded(&LoadOptions { conntrack_max: self.config.conntrack_max, config })?;
        for name in self.uplinks()? {
            let Some(index) = self.rtnl.index(&name)? else { continue };
            let Some((addr, _)) = self.rtnl.ipv4_addresses(index)?.first().copied() else { continue };
            self.datapath
                .attach_uplink(&name, index, addr, self.config.uplink_xdp)
                .with_context(|| format!("uplink {name}"))?;
        }
        let addrs: Vec<Ipv4Addr> = self.rtnl.all_ipv4_addresses()?.into_iter().map(|(a, _)| a).collect();
        self.datapath.set_host_addresses(&addrs)?;
        self.datapath.attach_sockets(&self.roots.cgroup, netns_cookie()?)
    }

    /// The configured uplinks, or the interfaces holding IPv4 default routes.
    pub fn uplinks(&self) -> Result<Vec<String>> {
        if let Some(list) = &self.config.uplinks {
            return Ok(list.clone());
        }
        // The connection answers for the namespace it was opened in: this
        // command's, where the uplinks are.
        let mut names = Vec::new();
        for index in self.rtnl.default_route_links()? {
            if let Some(name) = self.rtnl.name_of(index)? {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }
}

/// The cookie of this process's network namespace, as the socket programs
/// see it.
fn netns_cookie() -> Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").context("socket for the netns cookie")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_NETNS_COOKIE");
    }
    Ok(cookie)
}
