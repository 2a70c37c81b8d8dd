//! The overlay's view of the other hosts: every sandbox of an overlay
//! network that lives elsewhere, as an entry of the data path's
//! `REMOTE_ENDPOINTS` map ((VNI, address) -> that host's VTEP and the
//! sandbox's MAC). The agent feeds it from the cluster store's watch
//! ([`crate::cluster::Sink`]); the kernel only looks entries up.
//!
//! This host's own endpoints are never entered: they are in `ENDPOINTS`,
//! and an entry naming this host's VTEP would let a packet claiming to come
//! from a local sandbox in through the tunnel.
use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{Context, Result};
use netpath_common::{RemoteEndpoint, RemoteEndpointKey, addr_family};

use crate::{
    cluster::{EndpointRecord, Sink},
    datapath::Datapath,
};

/// One remote sandbox as the data path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
}

impl Remote {
    pub fn key(&self) -> RemoteEndpointKey {
        RemoteEndpointKey::ipv4(self.vni, self.ip.octets())
    }

    pub fn value(&self) -> RemoteEndpoint {
        let mut vtep = [0; 16];
        vtep[..4].copy_from_slice(&self.vtep.octets());
        RemoteEndpoint { vtep, vtep_family: addr_family::IPV4, flags: 0, mac: self.mac }
    }
}

/// Keeps `REMOTE_ENDPOINTS` equal to the cluster's endpoints minus this
/// host's (known by its VTEP, which is what the tunnel would send to).
pub struct RemoteEndpoints {
    datapath: Datapath,
    own_vtep: Ipv4Addr,
}

impl RemoteEndpoints {
    pub fn new(datapath: Datapath, own_vtep: Ipv4Addr) -> Self {
        RemoteEndpoints { datapath, own_vtep }
    }

    fn is_remote(&self, r: &Remote) -> bool {
        r.vtep != self.own_vtep
    }

    /// Makes the map hold exactly `all` (this host's endpoints left out):
    /// stale entries removed, the rest written. Returns (written, removed).
    pub fn resync(&self, all: &[Remote]) -> Result<(usize, usize)> {
        let wanted: HashMap<RemoteEndpointKey, RemoteEndpoint> =
            all.iter().filter(|r| self.is_remote(r)).map(|r| (r.key(), r.value())).collect();
        let mut map = self.datapath.remote_endpoints()?;
        let present: Vec<RemoteEndpointKey> = map.keys().filter_map(|k| k.ok()).collect();
        let mut removed = 0;
        for key in present.iter().filter(|k| !wanted.contains_key(k)) {
            self.datapath.remove_remote_endpoint(*key)?;
            removed += 1;
        }
        for (key, value) in &wanted {
            map.insert(*key, *value, 0).context("writing remote endpoint")?;
        }
        Ok((wanted.len(), removed))
    }

    pub fn upsert(&self, r: &Remote) -> Result<()> {
        if !self.is_remote(r) {
            return Ok(());
        }
        self.datapath.set_remote_endpoint(r.key(), r.value())
    }

    pub fn remove(&self, vni: u32, ip: Ipv4Addr) -> Result<()> {
        self.datapath.remove_remote_endpoint(RemoteEndpointKey::ipv4(vni, ip.octets()))
    }
}

impl From<&EndpointRecord> for Remote {
    fn from(ep: &EndpointRecord) -> Remote {
        Remote { vni: ep.vni, ip: ep.ip, mac: ep.mac, vtep: ep.vtep }
    }
}

/// What the agent drives: the store's endpoints into the data path. With
/// the data path not loaded (no overlay network here yet) there is nothing
/// to program; the overlay driver fills the map from the agent's file of
/// remote endpoints when it loads (see `overlay::sync_datapath`).
impl Sink for RemoteEndpoints {
    fn resync(&mut self, all: &[EndpointRecord]) -> Result<()> {
        if !self.datapath.is_loaded() {
            return Ok(());
        }
        let all: Vec<Remote> = all.iter().map(Remote::from).collect();
        RemoteEndpoints::resync(self, &all).map(|_| ())
    }

    fn upsert(&mut self, ep: &EndpointRecord) -> Result<()> {
        if !self.datapath.is_loaded() {
            return Ok(());
        }
        RemoteEndpoints::upsert(self, &Remote::from(ep))
    }

    fn remove(&mut self, _network: &str, vni: u32, ip: Ipv4Addr) -> Result<()> {
        if !self.datapath.is_loaded() {
            return Ok(());
        }
        RemoteEndpoints::remove(self, vni, ip)
    }
}

/// The agent's data-path sink for this instance (`netpath agent`): the
/// REMOTE_ENDPOINTS map in its pins, for host `host` (its own VTEP).
pub fn datapath_sink(roots: &crate::paths::Roots, host: &crate::cluster::HostRecord) -> Box<dyn Sink> {
    Box::new(RemoteEndpoints::new(Datapath::at(&roots.bpf), host.vtep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_leave_room_for_ipv6_and_read_back() {
        let r = Remote {
            vni: 4097,
            ip: Ipv4Addr::new(10, 0, 9, 66),
            mac: [2, 0x42, 10, 0, 9, 66],
            vtep: Ipv4Addr::new(192, 0, 2, 3),
        };
        let k = r.key();
        assert_eq!((k.vni, k.family), (4097, addr_family::IPV4));
        assert_eq!(&k.addr[..4], &[10, 0, 9, 66]);
        assert!(k.addr[4..].iter().all(|b| *b == 0));
        let v = r.value();
        assert_eq!(v.vtep_ipv4(), [192, 0, 2, 3]);
        assert_eq!(v.mac, r.mac);
        let own = RemoteEndpoints::new(Datapath::at(std::path::Path::new("/nonexistent")), r.vtep);
        assert!(!own.is_remote(&r), "this host's own endpoints stay out of the map");
    }
}
