//! The host namespace netpath manages: its configuration, rtnetlink handle
//! and data path, opened once per command.
use anyhow::Result;

use crate::{config::Config, datapath::Datapath, link::Rtnl, paths::Roots};

pub struct Host {
    pub roots: Roots,
    pub config: Config,
    pub rtnl: Rtnl,
    pub datapath: Datapath,
}

impl Host {
    pub fn open(roots: Roots) -> Result<Host> {
        let config = Config::load(&roots.config)?;
        Ok(Host {
            datapath: Datapath::at(&roots.bpf),
            rtnl: Rtnl::new()?,
            config,
            roots,
        })
    }
}
