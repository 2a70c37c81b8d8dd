//! etcd access and the key layout. Every key netpath writes lives under
//! `/netpath/v1/`:
//!
//! | key | value | bound to a host's lease |
//! | --- | --- | --- |
//! | `networks/NAME` | `OverlayNetwork` | no |
//! | `vnis/VNI` | network name (the VNI's claim) | no |
//! | `networks-guard` | a counter bumped by every network create/remove | no |
//! | `hosts/ID` | `HostRecord` | yes |
//! | `blocks/NET/A.B.C.D-PREFIX` | `BlockRecord` | yes |
//! | `affinity/NET/HOST` | the host's last block (`A.B.C.D/PREFIX`) | no |
//! | `endpoints/NET/A.B.C.D` | `EndpointRecord` | yes |
//!
//! Every write that could race with another host's is one transaction that
//! compares first (create revision 0 = "nobody has it", mod revision = "it
//! is still what I read"), so two hosts never get the same VNI, block or
//! address. The API is synchronous: each `Cluster` owns a current-thread
//! tokio runtime and blocks on one request at a time, with a deadline, so a
//! dead store fails a command within seconds instead of hanging it.
use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use ipnetwork::Ipv4Network;
use serde::{Serialize, de::DeserializeOwned};

use super::records::{EndpointRecord, FIRST_VNI, LAST_VNI, OverlayNetwork};

pub const ROOT: &str = "/netpath/v1/";
/// How long one request may take before the store counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Compare-and-swap retries before giving up on a contended key.
pub(super) const CAS_ATTEMPTS: usize = 64;

pub(super) fn network_key(name: &str) -> String {
    format!("{ROOT}networks/{name}")
}
pub(super) fn networks_prefix() -> String {
    format!("{ROOT}networks/")
}
fn vni_key(vni: u32) -> String {
    format!("{ROOT}vnis/{vni}")
}
fn vnis_prefix() -> String {
    format!("{ROOT}vnis/")
}
fn guard_key() -> String {
    format!("{ROOT}networks-guard")
}
pub(super) fn host_key(id: &str) -> String {
    format!("{ROOT}hosts/{id}")
}
pub(super) fn hosts_prefix() -> String {
    format!("{ROOT}hosts/")
}
pub(super) fn block_key(network: &str, block: Ipv4Network) -> String {
    format!("{ROOT}blocks/{network}/{}-{}", block.network(), block.prefix())
}
pub(super) fn blocks_prefix(network: &str) -> String {
    format!("{ROOT}blocks/{network}/")
}
pub(super) fn affinity_key(network: &str, host: &str) -> String {
    format!("{ROOT}affinity/{network}/{host}")
}
pub(super) fn affinity_prefix(network: &str) -> String {
    format!("{ROOT}affinity/{network}/")
}
pub(super) fn endpoint_key(network: &str, ip: Ipv4Addr) -> String {
    format!("{ROOT}endpoints/{network}/{ip}")
}
pub(super) fn endpoints_prefix(network: &str) -> String {
    format!("{ROOT}endpoints/{network}/")
}
pub(super) fn all_endpoints_prefix() -> String {
    format!("{ROOT}endpoints/")
}

/// What `cluster-store` names: `etcd://HOST:PORT`, one or several.
/// Returns the gRPC endpoints (`http://HOST:PORT`).
pub fn parse_store_urls(urls: &[String]) -> Result<Vec<String>> {
    crate::validate::etcd_urls(urls)
}

/// (key, value, mod revision) of each key under a prefix, and the store's
/// revision at the read.
pub(super) type Listing<T> = (Vec<(String, T, i64)>, i64);

/// One connection to the store.
pub struct Cluster {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) client: Client,
    /// As configured (`etcd://...`), for messages.
    pub(super) urls: Vec<String>,
}

/// The outcome of a compare-and-swap transaction.
pub(super) enum Cas {
    Done,
    Lost,
}

impl Cluster {
    /// Connects to the store at `urls` (`etcd://HOST:PORT`, several
    /// allowed) and checks that it answers.
    pub fn connect(urls: &[String]) -> Result<Cluster> {
        let endpoints = parse_store_urls(urls)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
        let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT).with_timeout(REQUEST_TIMEOUT);
        let shown = urls.join(",");
        let client = rt
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&endpoints, Some(options))).await })
            .map_err(|_| anyhow!("cluster store {shown} unreachable: no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("cluster store {shown} unreachable: {e}"))?;
        let cluster = Cluster { rt, client, urls: urls.to_vec() };
        // Client::connect is lazy about the network; one read proves the
        // store is there, so a dead one fails here in one clear line.
        let key = guard_key();
        let client = cluster.client.clone();
        let probe = cluster.rt.block_on(async {
            let mut client = client;
            tokio::time::timeout(REQUEST_TIMEOUT, client.get(key, None)).await
        });
        match probe {
            Ok(Ok(_)) => Ok(cluster),
            Ok(Err(e)) => bail!("cluster store {shown} unreachable: {}", one_line(&e)),
            Err(_) => bail!("cluster store {shown} unreachable: no answer within {REQUEST_TIMEOUT:?}"),
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Runs one request on this connection's runtime, with a deadline;
    /// every failure reads "cluster store URL: WHAT: CAUSE".
    pub(super) fn rpc<T, F>(&self, what: &str, f: impl FnOnce(Client) -> F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = self.client.clone();
        match self.rt.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, f(client)).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow!("cluster store {}: {what}: {}", self.urls.join(","), one_line(&e))),
            Err(_) => {
                Err(anyhow!("cluster store {}: {what}: no answer within {REQUEST_TIMEOUT:?}", self.urls.join(",")))
            }
        }
    }

    /// The value and mod revision of `key`, if present.
    pub(super) fn get_raw(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let key = key.to_string();
        let resp = self.rpc("get", |mut c| async move { c.get(key, None).await })?;
        Ok(resp.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Every (key, value, mod revision) under `prefix`, and the store's revision.
    pub(super) fn list_raw(&self, prefix: &str) -> Result<Listing<Vec<u8>>> {
        let prefix = prefix.to_string();
        let resp =
            self.rpc("list", |mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec(), kv.mod_revision()))
            .collect();
        Ok((kvs, revision))
    }

    /// Every value under `prefix`, decoded; the store's revision.
    pub(super) fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Listing<T>> {
        let (kvs, rev) = self.list_raw(prefix)?;
        let mut out = Vec::with_capacity(kvs.len());
        for (key, value, modrev) in kvs {
            let v = serde_json::from_slice(&value).with_context(|| format!("cluster store: bad record at {key}"))?;
            out.push((key, v, modrev));
        }
        Ok((out, rev))
    }

    pub(super) fn txn(&self, what: &str, txn: Txn) -> Result<Cas> {
        let resp = self.rpc(what, |mut c| async move { c.txn(txn).await })?;
        Ok(if resp.succeeded() { Cas::Done } else { Cas::Lost })
    }

    /// Creates overlay network `net` (its `vni` is ignored): the name and
    /// subnet must be free across the cluster; the store assigns the lowest
    /// free VNI. Returns the network as stored.
    pub fn create_network(&self, net: &OverlayNetwork) -> Result<OverlayNetwork> {
        net.validate()?;
        for _ in 0..CAS_ATTEMPTS {
            let guard = self.get_raw(&guard_key())?;
            let (existing, _) = self.list::<OverlayNetwork>(&networks_prefix())?;
            if existing.iter().any(|(_, n, _)| n.name == net.name) {
                bail!("network with name {} already exists in the cluster", net.name);
            }
            if let Some((_, other, _)) =
                existing.iter().find(|(_, n, _)| crate::validate::overlaps(n.subnet, net.subnet))
            {
                bail!("subnet {} overlaps overlay network {} ({})", net.subnet, other.name, other.subnet);
            }
            let (vnis, _) = self.list_raw(&vnis_prefix())?;
            let taken: std::collections::BTreeSet<u32> =
                vnis.iter().filter_map(|(k, _, _)| k.rsplit('/').next()?.parse().ok()).collect();
            let vni = (FIRST_VNI..=LAST_VNI)
                .find(|v| !taken.contains(v))
                .ok_or_else(|| anyhow!("no free VNI left in the cluster"))?;
            let stored = OverlayNetwork { vni, ..net.clone() };
            // The guard's revision stands for "the network list I checked":
            // any create or remove in between bumps it and this loses.
            let guard_cmp = match &guard {
                Some((_, rev)) => Compare::mod_revision(guard_key(), CompareOp::Equal, *rev),
                None => Compare::create_revision(guard_key(), CompareOp::Equal, 0),
            };
            let next_guard = guard.map_or(1, |(v, _)| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0) + 1);
            let txn = Txn::new()
                .when([
                    guard_cmp,
                    Compare::create_revision(network_key(&net.name), CompareOp::Equal, 0),
                    Compare::create_revision(vni_key(vni), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(network_key(&net.name), to_json(&stored)?, None),
                    TxnOp::put(vni_key(vni), net.name.clone(), None),
                    TxnOp::put(guard_key(), next_guard.to_string(), None),
                ]);
            if let Cas::Done = self.txn("creating network", txn)? {
                return Ok(stored);
            }
        }
        bail!("network {}: the cluster's network list kept changing; try again", net.name)
    }

    pub fn networks(&self) -> Result<Vec<OverlayNetwork>> {
        Ok(self.list::<OverlayNetwork>(&networks_prefix())?.0.into_iter().map(|(_, n, _)| n).collect())
    }

    pub fn network(&self, name: &str) -> Result<Option<OverlayNetwork>> {
        match self.get_raw(&network_key(name))? {
            Some((v, _)) => Ok(Some(serde_json::from_slice(&v).context("cluster store: bad network record")?)),
            None => Ok(None),
        }
    }

    /// Removes overlay network `name`, its VNI claim, block leases and
    /// affinities, in one transaction that holds only while no endpoint
    /// record of the network exists on any host.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let (net, _) =
            self.get_raw(&network_key(name))?.ok_or_else(|| anyhow!("network {name} not found in the cluster"))?;
        let net: OverlayNetwork = serde_json::from_slice(&net).context("cluster store: bad network record")?;
        let del = |prefix: String| TxnOp::delete(prefix, Some(etcd_client::DeleteOptions::new().with_prefix()));
        // A range compare over the endpoint prefix: every key there must
        // have create revision 0, which holds exactly when there is none.
        let txn = Txn::new()
            .when([
                Compare::create_revision(network_key(name), CompareOp::Greater, 0),
                Compare::create_revision(endpoints_prefix(name), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then([
                TxnOp::delete(network_key(name), None),
                TxnOp::delete(vni_key(net.vni), None),
                del(blocks_prefix(name)),
                del(affinity_prefix(name)),
            ]);
        match self.txn("removing network", txn)? {
            Cas::Done => Ok(()),
            Cas::Lost => {
                let (eps, _) = self.list::<EndpointRecord>(&endpoints_prefix(name))?;
                if eps.is_empty() {
                    bail!("network {name} changed while being removed; try again");
                }
                let mut hosts: Vec<&str> = eps.iter().map(|(_, e, _)| e.host.as_str()).collect();
                hosts.sort();
                hosts.dedup();
                bail!(
                    "error while removing network: network {name} has active endpoints ({} on host(s) {})",
                    eps.len(),
                    hosts.join(", ")
                )
            }
        }
    }

    /// Every endpoint record of every overlay network, and the store
    /// revision they were read at (a watch from revision + 1 misses nothing).
    pub fn endpoints(&self) -> Result<(Vec<EndpointRecord>, i64)> {
        let (eps, rev) = self.list::<EndpointRecord>(&all_endpoints_prefix())?;
        Ok((eps.into_iter().map(|(_, e, _)| e).collect(), rev))
    }

    /// Starts watching every key under `/netpath/v1/` from `revision`
    /// (inclusive), with previous values on deletes.
    pub fn watch(&self, revision: i64) -> Result<Watch> {
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(revision);
        let stream = self.rpc("watching", |mut c| async move { c.watch(ROOT, Some(options)).await })?;
        Ok(Watch { stream })
    }

    /// Waits up to `timeout` for the next batch of changes on `watch`.
    pub fn next_changes(&self, watch: &mut Watch, timeout: Duration) -> Result<WatchStep> {
        let next = self.rt.block_on(async { tokio::time::timeout(timeout, watch.stream.message()).await });
        let resp = match next {
            Err(_) => return Ok(WatchStep::Idle),
            Ok(Err(e)) => return Ok(WatchStep::Lost(one_line(&e))),
            Ok(Ok(None)) => return Ok(WatchStep::Lost("the store closed the watch".into())),
            Ok(Ok(Some(resp))) => resp,
        };
        if resp.compact_revision() > 0 {
            return Ok(WatchStep::Lost(format!("compacted at revision {}", resp.compact_revision())));
        }
        if resp.canceled() {
            return Ok(WatchStep::Lost(format!("watch canceled: {}", resp.cancel_reason())));
        }
        let mut changes = Vec::new();
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let revision = kv.mod_revision();
            changes.push(match ev.event_type() {
                EventType::Put => Change::Put { key, value: kv.value().to_vec(), revision },
                EventType::Delete => Change::Delete { key, prev: ev.prev_kv().map(|p| p.value().to_vec()), revision },
            });
        }
        Ok(WatchStep::Changes(changes))
    }
}

/// A watch on `/netpath/v1/`; read it with `Cluster::next_changes`.
pub struct Watch {
    stream: etcd_client::WatchStream,
}

#[derive(Debug)]
pub enum WatchStep {
    Changes(Vec<Change>),
    /// Nothing within the timeout.
    Idle,
    /// The watch ended (store restarted, history compacted, connection
    /// lost): resynchronise from a fresh list.
    Lost(String),
}

#[derive(Debug, Clone)]
pub enum Change {
    Put { key: String, value: Vec<u8>, revision: i64 },
    Delete { key: String, prev: Option<Vec<u8>>, revision: i64 },
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

pub(super) fn leased(lease: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(lease))
}

/// etcd-client's errors carry tonic's multi-line status and bury the
/// cause (say, "Connection refused") in their sources: one line, with it.
fn one_line(e: &etcd_client::Error) -> String {
    let mut parts: Vec<String> = vec![match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.iter().map(|p| p.lines().next().unwrap_or("").trim()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_etcd_host_port() {
        let ok = parse_store_urls(&["etcd://10.0.0.1:2379".into(), "etcd://store.lab:2379".into()]).unwrap();
        assert_eq!(ok, ["http://10.0.0.1:2379", "http://store.lab:2379"]);
        for bad in ["http://10.0.0.1:2379", "etcd://10.0.0.1", "etcd://:2379", "etcd://a:0", "etcd://a:x"] {
            assert!(parse_store_urls(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_store_urls(&[]).is_err());
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        assert_eq!(network_key("ov"), "/netpath/v1/networks/ov");
        assert_eq!(block_key("ov", "10.0.9.64/26".parse().unwrap()), "/netpath/v1/blocks/ov/10.0.9.64-26");
        assert_eq!(endpoint_key("ov", Ipv4Addr::new(10, 0, 9, 2)), "/netpath/v1/endpoints/ov/10.0.9.2");
        // A network's prefix never matches another network whose name it starts.
        assert!(!endpoint_key("ov2", Ipv4Addr::new(10, 0, 9, 2)).starts_with(&endpoints_prefix("ov")));
    }
}
