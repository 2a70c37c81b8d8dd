//! Membership: a host's etcd lease and everything bound to it (its host
//! record, its block leases, its endpoint records). As in Flannel, the lease
//! has a TTL and the host keeps it alive; a host that stops renewing loses
//! every leased key when the TTL runs out, and the other hosts' watches see
//! those keys deleted. The block a host held is remembered (`affinity/`) so
//! a returning host gets it back while nobody else took it.
use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::{
    records::{BlockRecord, EndpointRecord, HostRecord, OverlayNetwork},
    store::{
        CAS_ATTEMPTS, Cas, Cluster, affinity_key, affinity_prefix, block_key, blocks_prefix, endpoint_key,
        endpoints_prefix, host_key, leased, to_json,
    },
};

/// How long a silent host stays a member unless `cluster-lease-ttl` says.
pub const DEFAULT_TTL: Duration = crate::config::DEFAULT_CLUSTER_LEASE_TTL;

/// How much shorter than `cluster-lease-ttl` the etcd lease is granted.
/// etcd revokes expired leases in a sweep every 500 ms (its lessor's
/// revoke loop), and the other hosts hear of the deleted keys through their
/// watches after that. Granting the full TTL made a silent host disappear
/// up to half a second after the TTL its operator configured (3.0-3.4 s
/// with 3 s in the lab); granted this much shorter, it is gone within the
/// TTL counted from its last renewal.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// etcd's smallest lease (1.5 election timeouts of its default 1 s,
/// rounded up): it raises a shorter grant to this.
const MIN_GRANTED_TTL_S: u64 = 2;

/// The etcd lease granted for a configured `cluster-lease-ttl`.
pub fn granted_ttl(ttl: Duration) -> u64 {
    ttl.saturating_sub(EXPIRY_MARGIN).as_secs().max(MIN_GRANTED_TTL_S)
}

/// This host's membership: which lease holds its keys. Kept in the state
/// directory by the agent, so a restarted agent picks the same lease back
/// up while it is alive and no other host ever sees this one leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub host: HostRecord,
    pub lease: i64,
    /// The lease's TTL as granted (see `granted_ttl`).
    pub ttl_s: u64,
}

impl Membership {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s)
    }

    /// The membership saved at `path` (the agent's `Files::membership`), if
    /// one is there and readable; whether its lease still lives is the
    /// store's to say (`Cluster::resume`).
    pub fn load(path: &Path) -> Option<Membership> {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::state::write_atomically(path, &serde_json::to_vec(self)?, false)
    }
}

/// Why an endpoint could not be registered.
#[derive(Debug)]
pub struct AddressTaken {
    pub network: String,
    pub ip: Ipv4Addr,
    pub holder: String,
}

impl std::fmt::Display for AddressTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "address {} on network {} is already in use by {}", self.ip, self.network, self.holder)
    }
}

impl std::error::Error for AddressTaken {}

/// The store no longer knows a host's lease: it ran out, and every key
/// bound to it is gone. Join again.
#[derive(Debug)]
pub struct LeaseExpired {
    pub lease: i64,
    pub host: String,
}

impl std::fmt::Display for LeaseExpired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cluster lease {:x} of host {} expired", self.lease, self.host)
    }
}

impl std::error::Error for LeaseExpired {}

impl Cluster {
    /// Grants a lease that ends within `ttl` (`granted_ttl`) and writes
    /// this host's record bound to it.
    pub fn join(&self, host: &HostRecord, ttl: Duration) -> Result<Membership> {
        crate::validate::name(&host.id).context("host ID")?;
        let secs = granted_ttl(ttl);
        let lease = self.rpc("granting a lease", |mut c| async move { c.lease_grant(secs as i64, None).await })?;
        let m = Membership { host: host.clone(), lease: lease.id(), ttl_s: secs };
        self.put_host(&m)?;
        Ok(m)
    }

    fn put_host(&self, m: &Membership) -> Result<()> {
        let (key, value, opts) = (host_key(&m.host.id), to_json(&m.host)?, leased(m.lease));
        self.rpc("writing the host record", |mut c| async move { c.put(key, value, opts).await })?;
        Ok(())
    }

    /// Renews the lease once. Fails when the store no longer knows it (it
    /// expired: every key bound to it is gone; join again).
    pub fn keep_alive(&self, m: &Membership) -> Result<()> {
        let id = m.lease;
        // Opening etcd-client's keep-alive stream sends one renewal and
        // reads its answer; an unknown (expired) lease comes back as
        // "lease not found".
        let renewed = self.rpc("renewing the lease", |mut c| async move {
            match c.lease_keep_alive(id).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(e)) if e.contains("not found") => Ok(false),
                Err(e) => Err(e),
            }
        })?;
        let ttl = i64::from(renewed);
        if ttl <= 0 {
            return Err(LeaseExpired { lease: id, host: m.host.id.clone() }.into());
        }
        Ok(())
    }

    /// Picks `m` back up after a restart: renews its lease and rewrites the
    /// host record (its VTEP may have changed). False when the lease expired.
    pub fn resume(&self, m: &Membership) -> Result<bool> {
        match self.keep_alive(m) {
            Ok(()) => {
                self.put_host(m)?;
                Ok(true)
            }
            Err(e) if e.is::<LeaseExpired>() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// This host's membership, once per process: the one saved at `path`
    /// (its `Files::membership`, if it is this host's) picked back up while
    /// its lease lives, so no other host sees this one leave; else a new
    /// one, joined with `ttl` and saved there for the next start.
    ///
    /// The agent and the commands of a host all come here, and all under
    /// one lock (`path` + `.lock`), held from reading the file to writing
    /// it: whoever comes second takes up the first one's lease. Without it
    /// a command that found the agent still joining took a second lease,
    /// which nobody renews, and the records it wrote (its sandbox's) went
    /// from every host after the TTL.
    pub fn take_up(&self, me: &HostRecord, ttl: Duration, path: &Path) -> Result<Membership> {
        let _lock = lock_membership(path)?;
        if let Some(saved) = Membership::load(path).filter(|m| m.host.id == me.id) {
            // The VTEP may have changed since (`cluster-advertise`):
            // `resume` rewrites the host record, and the file follows, so
            // that whoever reads it next takes up this lease too.
            let m = Membership { host: me.clone(), ..saved.clone() };
            if self.resume(&m)? {
                if m != saved {
                    m.save(path)?;
                }
                return Ok(m);
            }
        }
        let m = self.join(me, ttl)?;
        m.save(path)?;
        Ok(m)
    }

    /// Ends the membership at once: the lease is revoked and every key
    /// bound to it (host record, blocks, endpoints) goes with it.
    pub fn leave(&self, m: &Membership) -> Result<()> {
        let id = m.lease;
        self.rpc("revoking the lease", |mut c| async move { c.lease_revoke(id).await })?;
        Ok(())
    }

    /// Every live host.
    pub fn hosts(&self) -> Result<Vec<HostRecord>> {
        Ok(self.list::<HostRecord>(&super::store::hosts_prefix())?.0.into_iter().map(|(_, h, _)| h).collect())
    }

    /// Every block of `network` some live host holds.
    pub fn blocks(&self, network: &str) -> Result<Vec<BlockRecord>> {
        Ok(self.list::<BlockRecord>(&blocks_prefix(network))?.0.into_iter().map(|(_, b, _)| b).collect())
    }

    /// This host's block of `network`: the one it holds already (moved onto
    /// its current lease), else the one it held last if nobody took it in
    /// between, else the first free one no other host held last (as
    /// Calico's block affinity: a dead host's block waits for it), else the
    /// first free one. Each claim is a compare-and-swap,
    /// so two hosts never hold the same block.
    pub fn lease_block(&self, network: &str, m: &Membership) -> Result<Ipv4Network> {
        let net = self.network(network)?.ok_or_else(|| anyhow!("network {network} not found in the cluster"))?;
        for _ in 0..CAS_ATTEMPTS {
            let (held, _) = self.list::<BlockRecord>(&blocks_prefix(network))?;
            let record =
                |block| BlockRecord { network: network.into(), block, host: m.host.id.clone(), vtep: m.host.vtep };
            if let Some((key, mine, rev)) = held.iter().find(|(_, b, _)| b.host == m.host.id) {
                // Rebind to this lease (a previous one may be about to expire).
                let txn = Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)]).and_then([
                    TxnOp::put(key.clone(), to_json(&record(mine.block))?, leased(m.lease)),
                    TxnOp::put(affinity_key(network, &m.host.id), mine.block.to_string(), None),
                ]);
                if let Cas::Done = self.txn("renewing the block lease", txn)? {
                    return Ok(mine.block);
                }
                continue;
            }
            let taken: Vec<Ipv4Network> = held.iter().map(|(_, b, _)| b.block).collect();
            // Every host's last block, this one's included: a free block
            // another host held last is kept for its return (its sandboxes
            // may still hold addresses in it) while any other is free.
            let (raw, _) = self.list_raw(&affinity_prefix(network))?;
            let last_held: Vec<(String, Ipv4Network)> = raw
                .iter()
                .filter_map(|(k, v, _)| {
                    let block = String::from_utf8_lossy(v).parse::<Ipv4Network>().ok()?;
                    Some((k.rsplit('/').next()?.to_string(), block))
                })
                .filter(|(_, b)| net.blocks().any(|x| x == *b))
                .collect();
            let previous = last_held.iter().find(|(h, _)| *h == m.host.id).map(|(_, b)| *b);
            let others: Vec<Ipv4Network> = last_held.iter().filter(|(h, _)| *h != m.host.id).map(|(_, b)| *b).collect();
            let candidate = previous
                .filter(|b| !taken.contains(b))
                .or_else(|| net.blocks().find(|b| !taken.contains(b) && !others.contains(b)))
                .or_else(|| net.blocks().find(|b| !taken.contains(b)))
                .ok_or_else(|| {
                    anyhow!(
                        "network {network}: every /{} block of {} is leased to a host",
                        net.block_prefix,
                        net.subnet
                    )
                })?;
            let key = block_key(network, candidate);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    // The network must still exist when the block is taken.
                    Compare::create_revision(super::store::network_key(network), CompareOp::Greater, 0),
                ])
                .and_then([
                    TxnOp::put(key, to_json(&record(candidate))?, leased(m.lease)),
                    TxnOp::put(affinity_key(network, &m.host.id), candidate.to_string(), None),
                ]);
            if let Cas::Done = self.txn("leasing a block", txn)? {
                return Ok(candidate);
            }
        }
        bail!("network {network}: could not lease a block, the block list kept changing")
    }

    /// Writes `ep`, bound to this host's lease. The address is claimed by a
    /// compare-and-swap: free, or already this host's (re-registration after
    /// a restart moves it onto the current lease); another host's is refused
    /// with `AddressTaken`.
    pub fn register_endpoint(&self, ep: &EndpointRecord, m: &Membership) -> Result<()> {
        if ep.host != m.host.id {
            bail!("endpoint {} names host {}, not this host {}", ep.ip, ep.host, m.host.id);
        }
        let key = endpoint_key(&ep.network, ep.ip);
        let value = to_json(ep)?;
        for _ in 0..CAS_ATTEMPTS {
            let txn = Txn::new()
                .when([
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(super::store::network_key(&ep.network), CompareOp::Greater, 0),
                ])
                .and_then([TxnOp::put(key.clone(), value.clone(), leased(m.lease))]);
            if let Cas::Done = self.txn("registering an endpoint", txn)? {
                return Ok(());
            }
            let Some((current, rev)) = self.get_raw(&key)? else {
                if self.network(&ep.network)?.is_none() {
                    bail!("network {} not found in the cluster", ep.network);
                }
                continue;
            };
            let current: EndpointRecord = serde_json::from_slice(&current).context("cluster store: bad endpoint")?;
            if current.host != m.host.id {
                return Err(AddressTaken {
                    network: ep.network.clone(),
                    ip: ep.ip,
                    holder: format!("{} on host {}", current.name, current.host),
                }
                .into());
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key.clone(), value.clone(), leased(m.lease))]);
            if let Cas::Done = self.txn("registering an endpoint", txn)? {
                return Ok(());
            }
        }
        bail!("endpoint {} on {}: the address kept changing hands", ep.ip, ep.network)
    }

    /// Registers `ep` at the first free assignable address of `block`
    /// (`ep.ip` is ignored) and returns the record as written.
    pub fn claim_address(
        &self,
        net: &OverlayNetwork,
        block: Ipv4Network,
        ep: &EndpointRecord,
        m: &Membership,
    ) -> Result<EndpointRecord> {
        for _ in 0..CAS_ATTEMPTS {
            let (held, _) = self.list_raw(&endpoints_prefix(&net.name))?;
            let used: std::collections::HashSet<Ipv4Addr> =
                held.iter().filter_map(|(k, _, _)| k.rsplit('/').next()?.parse().ok()).collect();
            let ip = net
                .assignable(block)
                .find(|a| !used.contains(a))
                .ok_or_else(|| anyhow!("network {}: no free address left in block {block}", net.name))?;
            let record = EndpointRecord { ip, ..ep.clone() };
            match self.register_endpoint(&record, m) {
                Ok(()) => return Ok(record),
                Err(e) if e.is::<AddressTaken>() => continue,
                Err(e) => return Err(e),
            }
        }
        bail!("network {}: could not claim an address in {block}", net.name)
    }

    /// Deletes the record of `ip` on `network` if host `host` holds it. A
    /// record of another host's is left alone: this host lost the address
    /// while it was away, and the new holder's record is not its to delete.
    pub fn release_endpoint(&self, network: &str, ip: Ipv4Addr, host: &str) -> Result<()> {
        let key = endpoint_key(network, ip);
        for _ in 0..CAS_ATTEMPTS {
            let Some((current, rev)) = self.get_raw(&key)? else { return Ok(()) };
            let current: EndpointRecord = serde_json::from_slice(&current).context("cluster store: bad endpoint")?;
            if current.host != host {
                return Ok(());
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::delete(key.clone(), None)]);
            if let Cas::Done = self.txn("releasing an endpoint", txn)? {
                return Ok(());
            }
        }
        bail!("endpoint {ip} on {network}: the record kept changing")
    }
}

/// The file `Cluster::take_up` locks, beside the membership file `path`.
pub fn membership_lock(path: &Path) -> std::path::PathBuf {
    path.with_extension("lock")
}

/// The lock `Cluster::take_up` holds: an exclusive `flock` on the file
/// beside the membership file, released when dropped.
fn lock_membership(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let lock = membership_lock(path);
    if let Some(dir) = lock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .with_context(|| format!("opening {}", lock.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", lock.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_ends_within_the_configured_ttl() {
        for (configured, granted) in [(3, 2), (5, 4), (15, 14), (3600, 3599)] {
            assert_eq!(granted_ttl(Duration::from_secs(configured)), granted, "cluster-lease-ttl {configured}");
        }
        // Never below what etcd grants anyway.
        assert_eq!(granted_ttl(Duration::from_secs(1)), MIN_GRANTED_TTL_S);
    }
}
