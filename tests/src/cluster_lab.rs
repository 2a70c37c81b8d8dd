//! The multi-host lab with the lab's etcd, as the cluster and overlay tests
//! use it: building it, talking to the store from inside a host, waiting
//! (bounded) for the agents, reading a host's data path and asking its
//! resolver.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Result;
use netpath::{cluster::Cluster, netns, state::Store};
use netpath_common::{Counters, Program, RemoteEndpointKey};
use netpath_lab::multihost::{MultiHost, Where};

use crate::{output, words};

/// A lab of `hosts` hosts named after `tag`, with etcd running in it.
pub fn with_store(tag: &str, hosts: usize) -> MultiHost {
    let mut mh = MultiHost::create(tag, hosts, &crate::bins()).expect("building the multi-host lab");
    mh.start_etcd().expect("starting etcd in the lab");
    mh
}

/// [`with_store`], every host's daemon.json pointing at the store (plus the
/// keys of `extra`): the product's agent runs on each from its first command.
pub fn configured(tag: &str, hosts: usize, extra: &serde_json::Value) -> MultiHost {
    let mh = with_store(tag, hosts);
    mh.configure_cluster(extra).expect("configuring the hosts' cluster keys");
    mh
}

/// Runs `f` with a fresh connection to the lab's store, made (and used, and
/// dropped) on a thread inside host `i`'s namespace.
pub fn on_host<T: Send>(mh: &MultiHost, i: usize, f: impl FnOnce(&Cluster) -> Result<T> + Send) -> Result<T> {
    let url = mh.store_url();
    netns::run_in(&mh.host(i).ns, || f(&Cluster::connect(&[url])?))
}

/// Polls `cond` every 100 ms until it holds or `limit` passes (a bound so a
/// broken build fails instead of hanging; the assertion is on what is seen).
/// Returns how long it took.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The bound on waiting for the agents: far above any TTL a test sets.
pub const AGENT_LIMIT: Duration = Duration::from_secs(30);

/// Host `i`'s REMOTE_ENDPOINTS keys.
pub fn remote_keys(mh: &MultiHost, i: usize) -> Vec<RemoteEndpointKey> {
    mh.host(i).datapath().remote_endpoints().unwrap().keys().filter_map(|k| k.ok()).collect()
}

/// Waits (bounded) until each host's agent has programmed the other
/// hosts' sandboxes `eps` (host index, address) into its data path.
pub fn await_agents(mh: &MultiHost, vni: u32, eps: &[(usize, Ipv4Addr)]) {
    let want: Vec<(usize, RemoteEndpointKey)> = (0..mh.hosts.len())
        .flat_map(|i| {
            eps.iter()
                .filter(move |(at, _)| *at != i)
                .map(move |(_, ip)| (i, RemoteEndpointKey::ipv4(vni, ip.octets())))
        })
        .collect();
    mh.await_remote_endpoints(&want, AGENT_LIMIT).unwrap();
}

/// (address, MAC) of sandbox `name`'s first attachment on host `i`, from its state.
pub fn endpoint_on(mh: &MultiHost, i: usize, name: &str) -> (Ipv4Addr, [u8; 6]) {
    let (_store, state) = Store::open(&mh.host(i).roots).unwrap();
    let att = &state.sandboxes[name].attachments[0];
    (att.ip, att.mac)
}

/// Every program's counters on host `i`, for exact before/after comparisons.
pub fn host_counters(mh: &MultiHost, i: usize) -> Vec<(Program, Counters)> {
    crate::counters_of(&mh.host(i).datapath())
}

/// Runs `argv` in host `i`'s namespace; its stdout, failing unless it succeeds.
pub fn host_out(mh: &MultiHost, i: usize, argv: &[&str]) -> String {
    let (code, out, err) = output(mh.host(i).cmd(argv[0]).unwrap().args(&argv[1..])).unwrap();
    assert_eq!(code, 0, "{argv:?} on host {i}: {err}");
    out
}

/// `netpath-lab dig NAME` from sandbox `from` on host `i`, asking `server`
/// (the sandbox's gateway: this host's resolver): the rcode and the
/// addresses answered (none when the probe got no answer at all).
pub fn dig(mh: &MultiHost, i: usize, from: &str, name: &str, server: Ipv4Addr) -> (String, Vec<Ipv4Addr>) {
    let line = format!("dig --name {name} --server {server}");
    let (code, out, err) = output(&mut mh.probe(Where::Sandbox(i, from), &words(&line)).unwrap()).unwrap();
    assert_eq!(code, 0, "dig {name} from {from} on host {i}: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let answers =
        v["answers"].as_array().map_or(Vec::new(), |a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect());
    (v["rcode"].as_str().unwrap_or_default().to_string(), answers)
}
