//! `netpath agent`: this host's member of the cluster. A thin loop over the
//! library: it keeps the host's lease alive, puts this host's endpoints
//! back after it (re)joins, follows every change under `/netpath/v1/` and
//! hands the other hosts' endpoints to the data path (`Sink`) and to the
//! resolver (a file in the state directory the resolver watches).
//!
//! One session = connect, resume or join, register, list, watch. A session
//! ends when the watch is lost (store restarted, history compacted,
//! connection broken) or the lease expired; the next one starts from a
//! fresh list (`Sink::resync`), so nothing missed in between stays wrong.
//! A restarted agent resumes the lease it saved while that lease lives:
//! the other hosts never see this host leave, and the pinned maps keep
//! forwarding meanwhile.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{
    Cluster, EndpointRecord, HostRecord, Membership, Sink, WatchStep,
    store::{Change, all_endpoints_prefix},
};

/// The overlay driver's name in netpath's state: attachments on such
/// networks are this host's endpoints in the cluster.
pub const OVERLAY_DRIVER: &str = "overlay";

/// Where the agent keeps what outlives it, in the instance's state
/// directory (one instance per lab host, so never shared).
pub struct Files {
    /// This host's ID, random, made once.
    pub host_id: PathBuf,
    /// The membership (lease) the agent holds, so a restart resumes it.
    pub membership: PathBuf,
    /// The other hosts' endpoints, for the resolver (replaced by rename).
    pub remote: PathBuf,
    /// What the agent last did (for `netpath info`), in the run directory.
    pub status: PathBuf,
}

impl Files {
    pub fn of(roots: &crate::paths::Roots) -> Files {
        Files {
            host_id: roots.state.join("cluster-host-id"),
            membership: roots.state.join("cluster-membership.json"),
            remote: roots.state.join(REMOTE_FILE),
            status: roots.run.join("cluster-agent.json"),
        }
    }
}

/// The file name (in the state directory) of the remote endpoints.
pub const REMOTE_FILE: &str = "cluster-endpoints.json";

/// This host's ID: read, or made (16 random hex digits) on first use.
///
/// The first command on a host starts the agent and both want the ID at
/// once: a new one is published with link(2), which never replaces, so one
/// of them wins and the other takes the winner's. (Each keeping its own
/// made the command join as a second host, on a lease nobody renews.)
pub fn host_id(path: &Path) -> Result<String> {
    let read = || {
        let id = std::fs::read_to_string(path).ok()?.trim().to_string();
        crate::validate::name(&id).is_ok().then_some(id)
    };
    if let Some(id) = read() {
        return Ok(id);
    }
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("kernel randomness: {e}"))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written whole under a name of its own (the ID is random) first.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new-{id}"));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &id).with_context(|| format!("writing {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read() {
            Some(theirs) => Ok(theirs),
            // A file that holds no ID is replaced, as ever.
            None => {
                crate::state::write_atomically(path, id.as_bytes(), false)?;
                Ok(id)
            }
        },
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The other hosts' endpoints as the resolver reads them; empty when the
/// file is missing or unreadable.
pub fn read_remote(path: &Path) -> Vec<EndpointRecord> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// What `netpath info` shows of the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub host: String,
    pub vtep: Option<Ipv4Addr>,
    pub lease: i64,
    pub ttl_s: u64,
    /// Unix seconds of the last successful renewal.
    pub renewed_at: u64,
    /// Endpoints of other hosts this host knows.
    pub remote_endpoints: usize,
    /// Why the store is not being followed right now, if it is not.
    pub error: Option<String>,
    /// Sandboxes disconnected from an overlay network because another host
    /// took their address while this one was away: "SANDBOX on NETWORK
    /// (ADDRESS, now HOLDER)".
    #[serde(default)]
    pub evicted: Vec<String>,
}

/// This host's own endpoints: in the product, the attachments on overlay
/// networks in netpath's state (see `StateEndpoints`).
pub trait Local {
    /// (network name, address, MAC, sandbox name, aliases) of each.
    fn endpoints(&self) -> Result<Vec<LocalEndpoint>>;
    /// Takes `ep` off its network: another host holds its address now
    /// (it took it while this host was away). The first holder keeps an
    /// address; the sandbox that comes back to find it taken is
    /// disconnected, so no address is ever on two hosts at once.
    fn evict(&self, ep: &LocalEndpoint) -> Result<()>;
    /// Makes `block` the range this host's new sandboxes on `network` draw
    /// their addresses from: a host that comes back to find its old block
    /// taken holds another one now, and the old range is someone else's.
    fn hold_block(&self, network: &str, block: ipnetwork::Ipv4Network) -> Result<()>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: crate::link::Mac,
    pub name: String,
    pub aliases: Vec<String>,
}

/// How the product disconnects an evicted sandbox (`network disconnect`
/// under the state lock; given by the caller, as the sink is, so that this
/// module does not depend on the sandbox and driver code that depends on it).
pub type Evict = fn(&crate::paths::Roots, &LocalEndpoint) -> Result<()>;

/// The product's `Local`: netpath's state file as it is now.
pub struct StateEndpoints {
    pub roots: crate::paths::Roots,
    pub evict: Evict,
}

impl Local for StateEndpoints {
    fn endpoints(&self) -> Result<Vec<LocalEndpoint>> {
        let path = self.roots.state_file();
        // Read without the lock (the agent must not wait on a command);
        // a missing file is an empty state, hence no endpoints.
        let state =
            crate::state::read_state(&path)?.map_err(|why| anyhow::anyhow!("reading {}: {why}", path.display()))?;
        Ok(state
            .networks
            .values()
            .filter(|n| n.driver == OVERLAY_DRIVER)
            .flat_map(|n| state.attachments_on(&n.name))
            .map(|(s, a)| LocalEndpoint {
                network: a.network.clone(),
                ip: a.ip,
                mac: a.mac,
                name: s.name.clone(),
                aliases: a.aliases.clone(),
            })
            .collect())
    }

    fn evict(&self, ep: &LocalEndpoint) -> Result<()> {
        (self.evict)(&self.roots, ep)
    }

    fn hold_block(&self, network: &str, block: ipnetwork::Ipv4Network) -> Result<()> {
        // Only the local record's range changes: the data path keys on the
        // whole subnet, and sandboxes keep the addresses they have.
        let (store, mut state) = crate::state::Store::open(&self.roots)?;
        match state.networks.get_mut(network) {
            Some(net) if net.driver == OVERLAY_DRIVER && net.ip_range != Some(block) => {
                net.ip_range = Some(block);
                store.save(&state)
            }
            _ => Ok(()),
        }
    }
}

pub struct AgentConfig {
    pub store: Vec<String>,
    pub host: HostRecord,
    pub ttl: Duration,
    pub files: Files,
}

pub struct Agent<S: Sink, L: Local> {
    config: AgentConfig,
    sink: S,
    local: L,
    /// Other hosts' endpoints by (network, address), as last told to the sink.
    remote: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    status: Status,
}

/// Why a session ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Stopped,
    /// Watch lost or lease expired: start over from a fresh list.
    Resync(String),
}

impl<S: Sink, L: Local> Agent<S, L> {
    pub fn new(config: AgentConfig, sink: S, local: L) -> Self {
        let status = Status { host: config.host.id.clone(), vtep: Some(config.host.vtep), ..Status::default() };
        Agent { config, sink, local, remote: BTreeMap::new(), status }
    }

    /// Sessions until `stop` is set; a failed session (store down) is
    /// retried after a pause that grows to five seconds. Never revokes
    /// the lease: stopping is not leaving (see `leave`).
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut pause = Duration::from_millis(250);
        while !stop.load(Ordering::SeqCst) {
            match self.session(stop) {
                Ok(Ended::Stopped) => break,
                Ok(Ended::Resync(why)) => {
                    eprintln!("agent: resynchronising: {why}");
                    pause = Duration::from_millis(250);
                }
                Err(e) => {
                    let line = format!("{e:#}");
                    eprintln!("agent: {line}");
                    self.status.error = Some(line);
                    self.write_status();
                    sleep_unless(stop, pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One session, until the watch is lost, the lease expires or `stop`.
    pub fn session(&mut self, stop: &AtomicBool) -> Result<Ended> {
        let cluster = Cluster::connect(&self.config.store)?;
        let m = self.membership(&cluster)?;
        self.status.lease = m.lease;
        self.status.ttl_s = m.ttl_s;
        self.status.renewed_at = unix_now();
        self.register_local(&cluster, &m)?;

        let (all, revision) = cluster.endpoints()?;
        self.remote = all.into_iter().filter(|e| e.host != m.host.id).map(|e| ((e.network.clone(), e.ip), e)).collect();
        let list: Vec<EndpointRecord> = self.remote.values().cloned().collect();
        self.sink.resync(&list)?;
        self.publish_remote()?;
        self.status.error = None;
        self.write_status();

        let mut watch = cluster.watch(revision + 1)?;
        // A third of the lease, as etcd's own clients renew: two renewals
        // may go unanswered before the lease ends.
        let renew_every = (m.ttl() / 3).max(Duration::from_millis(500));
        let mut renewed = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let until_renewal = renew_every.saturating_sub(renewed.elapsed());
            // Wake at least every half second so a stop is seen promptly.
            let wait = until_renewal.min(Duration::from_millis(500)).max(Duration::from_millis(10));
            match cluster.next_changes(&mut watch, wait)? {
                WatchStep::Changes(changes) => self.apply(&m, &changes)?,
                WatchStep::Idle => {}
                WatchStep::Lost(why) => return Ok(Ended::Resync(why)),
            }
            if renewed.elapsed() >= renew_every {
                if let Err(e) = cluster.keep_alive(&m) {
                    // The next session's `take_up` finds the saved lease
                    // expired and joins again (or takes up the one a
                    // command joined meanwhile).
                    if e.is::<super::lease::LeaseExpired>() {
                        return Ok(Ended::Resync(format!("{e:#}")));
                    }
                    return Err(e);
                }
                renewed = Instant::now();
                self.status.renewed_at = unix_now();
                self.write_status();
            }
        }
        Ok(Ended::Stopped)
    }

    /// The saved membership while its lease lives, else a new one (saved).
    fn membership(&mut self, cluster: &Cluster) -> Result<Membership> {
        cluster.take_up(&self.config.host, self.config.ttl, &self.config.files.membership)
    }

    /// Puts this host's endpoints (and the blocks they live in) on the
    /// current lease: after a rejoin they are gone from the store.
    fn register_local(&mut self, cluster: &Cluster, m: &Membership) -> Result<()> {
        let local = self.local.endpoints()?;
        let mut networks: BTreeMap<String, Option<super::OverlayNetwork>> = BTreeMap::new();
        for ep in local {
            let net = match networks.entry(ep.network.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let net = cluster.network(&ep.network)?;
                    if net.is_some() {
                        // No block left (another host took this one's):
                        // the sandboxes keep what addresses are still free.
                        match cluster.lease_block(&ep.network, m) {
                            Ok(block) => {
                                if let Err(e) = self.local.hold_block(&ep.network, block) {
                                    eprintln!("agent: taking block {block} for {}: {e:#}", ep.network);
                                }
                            }
                            Err(e) => eprintln!("agent: {e:#}"),
                        }
                    } else {
                        eprintln!("agent: overlay network {} is not in the cluster store", ep.network);
                    }
                    v.insert(net)
                }
            };
            let Some(net) = net else { continue };
            let record = EndpointRecord {
                network: ep.network.clone(),
                vni: net.vni,
                ip: ep.ip,
                mac: ep.mac,
                name: ep.name.clone(),
                aliases: ep.aliases.clone(),
                host: m.host.id.clone(),
                vtep: m.host.vtep,
            };
            match cluster.register_endpoint(&record, m) {
                Ok(()) => {}
                // Another host took the address while this one was away.
                Err(e) if e.is::<super::AddressTaken>() => {
                    let line = format!("{} on {} ({e})", ep.name, ep.network);
                    eprintln!("agent: disconnecting {line}");
                    match self.local.evict(&ep) {
                        Ok(()) => self.status.evicted.push(line),
                        Err(e) => eprintln!("agent: disconnecting {}: {e:#}", ep.name),
                    }
                }
                // Anything else: say so, keep the rest going.
                Err(e) => eprintln!("agent: {e:#}"),
            }
        }
        Ok(())
    }

    fn apply(&mut self, m: &Membership, changes: &[Change]) -> Result<()> {
        let prefix = all_endpoints_prefix();
        let mut changed = false;
        for change in changes {
            match change {
                Change::Put { key, value, .. } if key.starts_with(&prefix) => {
                    let ep: EndpointRecord = match serde_json::from_slice(value) {
                        Ok(ep) => ep,
                        Err(e) => {
                            eprintln!("agent: ignoring bad record at {key}: {e}");
                            continue;
                        }
                    };
                    if ep.host == m.host.id {
                        continue;
                    }
                    let slot = (ep.network.clone(), ep.ip);
                    if self.remote.get(&slot) != Some(&ep) {
                        self.sink.upsert(&ep)?;
                        self.remote.insert(slot, ep);
                        changed = true;
                    }
                }
                Change::Delete { key, .. } if key.starts_with(&prefix) => {
                    let Some((network, ip)) = key[prefix.len()..].split_once('/') else { continue };
                    let Ok(ip) = ip.parse::<Ipv4Addr>() else { continue };
                    if let Some(gone) = self.remote.remove(&(network.to_string(), ip)) {
                        self.sink.remove(network, gone.vni, ip)?;
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        if changed {
            self.publish_remote()?;
            self.write_status();
        }
        Ok(())
    }

    fn publish_remote(&mut self) -> Result<()> {
        let list: Vec<&EndpointRecord> = self.remote.values().collect();
        crate::state::write_atomically(&self.config.files.remote, &serde_json::to_vec(&list)?, false)?;
        self.status.remote_endpoints = list.len();
        Ok(())
    }

    fn write_status(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.status) {
            let _ = crate::state::write_atomically(&self.config.files.status, &bytes, false);
        }
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())));
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command and the agent it just started both make the ID: they must
    /// end up with the same one (threads stand in for the two processes).
    #[test]
    fn host_id_made_at_once_is_one_id() {
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!("netpath-host-id-{}-{round}", std::process::id()));
            let path = dir.join("cluster-host-id");
            let start = std::sync::Barrier::new(8);
            let ids: Vec<String> = std::thread::scope(|s| {
                let makers: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            host_id(&path).unwrap()
                        })
                    })
                    .collect();
                makers.into_iter().map(|m| m.join().unwrap()).collect()
            });
            let on_disk = std::fs::read_to_string(&path).unwrap();
            let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
            let _ = std::fs::remove_dir_all(&dir);
            assert!(ids.iter().all(|id| *id == on_disk), "round {round}: {ids:?}, file {on_disk}");
            assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        }
    }

    #[test]
    fn host_id_replaces_a_file_without_one() {
        let dir = std::env::temp_dir().join(format!("netpath-host-id-bad-{}", std::process::id()));
        let path = dir.join("cluster-host-id");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "not an id!").unwrap();
        let id = host_id(&path).unwrap();
        let again = host_id(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((id.len(), &again), (16, &id));
    }
}
