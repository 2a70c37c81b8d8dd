//! The cluster store: what hosts running netpath share to build overlay
//! networks together, kept in etcd v3 (never in a home-made store).
//!
//! - `records`: the shared facts (overlay networks, hosts, blocks, endpoints);
//! - `store`: the connection, the key layout and the network records;
//! - `lease`: membership (a host's etcd lease with a TTL, as Flannel keeps
//!   its subnet lease), block leases and endpoint registration;
//! - `Sink`: where the watch's view of the cluster goes on this host (the
//!   overlay data path implements it; the agent calls it).
pub mod agent;
pub mod lease;
pub mod process;
pub mod records;
pub mod store;

use std::net::Ipv4Addr;

use anyhow::Result;

pub use ipnetwork::Ipv4Network;
pub use lease::{AddressTaken, DEFAULT_TTL, LeaseExpired, Membership};
pub use records::{BlockRecord, EndpointRecord, HostRecord, OverlayNetwork};
pub use store::{Change, Cluster, Watch, WatchStep};

/// Receives the cluster's endpoints as this host's agent sees them.
pub trait Sink {
    /// After (re)connecting: make this host's view equal to `all`.
    fn resync(&mut self, all: &[EndpointRecord]) -> Result<()>;
    fn upsert(&mut self, ep: &EndpointRecord) -> Result<()>;
    fn remove(&mut self, network: &str, vni: u32, ip: Ipv4Addr) -> Result<()>;
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn resync(&mut self, all: &[EndpointRecord]) -> Result<()> {
        (**self).resync(all)
    }
    fn upsert(&mut self, ep: &EndpointRecord) -> Result<()> {
        (**self).upsert(ep)
    }
    fn remove(&mut self, network: &str, vni: u32, ip: Ipv4Addr) -> Result<()> {
        (**self).remove(network, vni, ip)
    }
}
