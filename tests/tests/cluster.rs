//! The cluster store (issue #12): a multi-host lab (hosts on one underlay
//! switch) with Debian's etcd started in the lab, listening on a lab address
//! only. Every connection to the store is made from a thread inside a lab
//! host's namespace, so nothing leaves the lab.
use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use netpath::{
    cluster::{
        EndpointRecord, HostRecord, Ipv4Network, Membership, OverlayNetwork, Sink,
        agent::{Agent, AgentConfig, Files, Local, LocalEndpoint},
    },
    netns,
};
use netpath_lab::multihost::{HOST_UPLINK, MultiHost};
use netpath_tests::{
    bins,
    cluster_lab::{self, on_host, wait_for},
};

fn lab(tag: &str, hosts: usize) -> MultiHost {
    cluster_lab::with_store(tag, hosts)
}

fn host_record(lab: &MultiHost, i: usize) -> HostRecord {
    HostRecord { id: format!("host{}", i + 1), vtep: lab.host(i).ip }
}

fn overlay(name: &str, subnet: &str, block_prefix: u8) -> OverlayNetwork {
    let subnet: Ipv4Network = subnet.parse().unwrap();
    OverlayNetwork {
        name: name.into(),
        id: format!("{name:0>64}"),
        subnet,
        gateway: subnet.nth(1).unwrap(),
        vni: 0,
        block_prefix,
        options: BTreeMap::new(),
    }
}

fn endpoint(net: &OverlayNetwork, host: &HostRecord, name: &str) -> EndpointRecord {
    EndpointRecord {
        network: net.name.clone(),
        vni: net.vni,
        ip: Ipv4Addr::UNSPECIFIED,
        mac: [0x02, 0x42, 0, 0, 0, 1],
        name: name.into(),
        aliases: vec![format!("{name}-alias")],
        host: host.id.clone(),
        vtep: host.vtep,
    }
}

#[test]
fn network_records_are_shared_and_removal_is_refused_while_members_exist() {
    let lab = lab("clnet", 3);
    let created = on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();
    assert!(created.vni >= netpath::cluster::records::FIRST_VNI, "{created:?}");
    for i in [1, 2] {
        let seen = on_host(&lab, i, |c| c.networks()).unwrap();
        assert_eq!(seen, vec![created.clone()], "host {}", i + 1);
    }
    // A taken name or an overlapping subnet is refused from any host, and
    // a second network gets its own VNI.
    let err = on_host(&lab, 1, |c| c.create_network(&overlay("ov", "10.0.10.0/24", 26))).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err:#}");
    let err = on_host(&lab, 2, |c| c.create_network(&overlay("other", "10.0.9.128/25", 26))).unwrap_err();
    assert!(err.to_string().contains("overlaps overlay network ov"), "{err:#}");
    let second = on_host(&lab, 2, |c| c.create_network(&overlay("second", "10.0.10.0/24", 26))).unwrap();
    assert_ne!(second.vni, created.vni);

    // Host 2 joins and puts a sandbox on ov: removal is refused from host 3.
    let h2 = host_record(&lab, 1);
    let ip = on_host(&lab, 1, |c| {
        let m = c.join(&h2, std::time::Duration::from_secs(15))?;
        let block = c.lease_block("ov", &m)?;
        let ep = c.claim_address(&created, block, &endpoint(&created, &h2, "web"), &m)?;
        Ok(ep.ip)
    })
    .unwrap();
    let err = on_host(&lab, 2, |c| c.remove_network("ov")).unwrap_err();
    assert!(err.to_string().contains("active endpoints") && err.to_string().contains("host2"), "{err:#}");
    assert_eq!(on_host(&lab, 0, |c| c.networks()).unwrap().len(), 2, "the refused removal changed nothing");

    // Once the endpoint is released, removal from host 3 works everywhere.
    // Only its holder's release deletes it.
    on_host(&lab, 1, |c| c.release_endpoint("ov", ip, "host1")).unwrap();
    assert!(on_host(&lab, 2, |c| c.remove_network("ov")).is_err(), "host 1 released nothing of host 2's");
    on_host(&lab, 1, |c| c.release_endpoint("ov", ip, "host2")).unwrap();
    on_host(&lab, 2, |c| c.remove_network("ov")).unwrap();
    for i in 0..3 {
        let names: Vec<String> = on_host(&lab, i, |c| c.networks()).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["second"], "host {}", i + 1);
    }
    // The name and subnet are free again.
    on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();
}

/// What one racing host got: its block of `ov`, its try for the only block
/// of `single`, and its 50 addresses.
type HostRun = (Ipv4Network, Result<Ipv4Network>, Vec<Ipv4Addr>);

#[test]
fn concurrent_hosts_never_share_a_block_or_an_address() {
    let lab = lab("clrace", 3);
    let ov = on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();
    // One block only: of two hosts racing for it, exactly one wins.
    let single = on_host(&lab, 0, |c| c.create_network(&overlay("single", "10.0.10.0/24", 24))).unwrap();

    let barrier = Barrier::new(3);
    let results: Vec<Result<HostRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (lab, ov, single, barrier) = (&lab, &ov, &single, &barrier);
                s.spawn(move || {
                    on_host(lab, i, |c| {
                        let me = host_record(lab, i);
                        let m = c.join(&me, std::time::Duration::from_secs(15))?;
                        barrier.wait();
                        let block = c.lease_block("ov", &m)?;
                        let contested = c.lease_block("single", &m);
                        barrier.wait();
                        // 50 addresses each, all three hosts drawing from
                        // the same block at once: only the CAS on the
                        // address keys keeps them apart.
                        let shared = single.subnet;
                        let mut ips = Vec::new();
                        for n in 0..50 {
                            let ep = endpoint(single, &me, &format!("s{}-{n}", i + 1));
                            ips.push(c.claim_address(single, shared, &ep, &m)?.ip);
                        }
                        let _ = ov;
                        Ok((block, contested, ips))
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("host thread")).collect()
    });
    let results: Vec<_> = results.into_iter().map(|r| r.expect("host run")).collect();

    let blocks: HashSet<_> = results.iter().map(|(b, _, _)| *b).collect();
    assert_eq!(blocks.len(), 3, "three hosts, three distinct blocks: {blocks:?}");
    let winners = results.iter().filter(|(_, c, _)| c.is_ok()).count();
    assert_eq!(
        winners,
        1,
        "exactly one host leases the only block: {:?}",
        results.iter().map(|r| &r.1).collect::<Vec<_>>()
    );
    for (_, c, _) in &results {
        if let Err(e) = c {
            assert!(e.to_string().contains("every /24 block"), "{e:#}");
        }
    }
    let mut all: Vec<Ipv4Addr> = results.iter().flat_map(|(_, _, ips)| ips.iter().copied()).collect();
    assert_eq!(all.len(), 150);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 150, "no address handed out twice");
    // The store agrees: 150 records, one per address, each naming its host.
    let (stored, _) = on_host(&lab, 0, |c| c.endpoints()).unwrap();
    let stored_ips: HashSet<Ipv4Addr> = stored.iter().map(|e| e.ip).collect();
    assert_eq!((stored.len(), stored_ips.len()), (150, 150));
    for (i, (_, _, ips)) in results.iter().enumerate() {
        for ip in ips {
            let rec = stored.iter().find(|e| e.ip == *ip).unwrap();
            assert_eq!(rec.host, format!("host{}", i + 1));
        }
    }
}

/// What a host's data path was told, as a recording `Sink`: the view it
/// would hold, and every removal.
#[derive(Default)]
struct SinkLog {
    view: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    removed: Vec<(String, u32, Ipv4Addr)>,
    resyncs: usize,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<SinkLog>>);

impl Sink for Recorder {
    fn resync(&mut self, all: &[EndpointRecord]) -> Result<()> {
        let mut log = self.0.lock().unwrap();
        log.view = all.iter().map(|e| ((e.network.clone(), e.ip), e.clone())).collect();
        log.resyncs += 1;
        Ok(())
    }
    fn upsert(&mut self, ep: &EndpointRecord) -> Result<()> {
        self.0.lock().unwrap().view.insert((ep.network.clone(), ep.ip), ep.clone());
        Ok(())
    }
    fn remove(&mut self, network: &str, vni: u32, ip: Ipv4Addr) -> Result<()> {
        let mut log = self.0.lock().unwrap();
        log.view.remove(&(network.to_string(), ip));
        log.removed.push((network.into(), vni, ip));
        Ok(())
    }
}

impl Recorder {
    fn hosts_seen(&self) -> Vec<(String, Ipv4Addr)> {
        self.0.lock().unwrap().view.values().map(|e| (e.host.clone(), e.ip)).collect()
    }
}

/// A host's own endpoints, fixed; those the agent evicts, and the blocks
/// it says the host holds, are recorded.
struct Fixed(Vec<LocalEndpoint>, Arc<Mutex<Vec<LocalEndpoint>>>, Arc<Mutex<Vec<(String, Ipv4Network)>>>);

impl Local for Fixed {
    fn endpoints(&self) -> Result<Vec<LocalEndpoint>> {
        let evicted = self.1.lock().unwrap();
        Ok(self.0.iter().filter(|e| !evicted.contains(e)).cloned().collect())
    }
    fn evict(&self, ep: &LocalEndpoint) -> Result<()> {
        self.1.lock().unwrap().push(ep.clone());
        Ok(())
    }
    fn hold_block(&self, network: &str, block: Ipv4Network) -> Result<()> {
        self.2.lock().unwrap().push((network.to_string(), block));
        Ok(())
    }
}

fn local(net: &str, ip: [u8; 4], name: &str) -> LocalEndpoint {
    LocalEndpoint {
        network: net.into(),
        ip: Ipv4Addr::from(ip),
        mac: [0x02, 0x42, ip[0], ip[1], ip[2], ip[3]],
        name: name.into(),
        aliases: vec![],
    }
}

/// An agent running in host `i`'s namespace on its own thread, until
/// `stop` is set; the lease is never revoked (a stopped agent looks like a
/// dead host to the others).
struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    evicted: Arc<Mutex<Vec<LocalEndpoint>>>,
    held: Arc<Mutex<Vec<(String, Ipv4Network)>>>,
}

impl Running {
    fn start(lab: &MultiHost, i: usize, ttl: Duration, sink: Recorder, endpoints: Vec<LocalEndpoint>) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let config = AgentConfig {
            store: vec![lab.store_url()],
            host: host_record(lab, i),
            ttl,
            files: Files::of(&lab.host(i).roots),
        };
        let ns = lab.host(i).ns.clone();
        let flag = stop.clone();
        let evicted = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let local = Fixed(endpoints, evicted.clone(), held.clone());
        let thread = std::thread::spawn(move || {
            netns::run_in(&ns, || {
                Agent::new(config, sink, local).run(&flag);
                Ok(())
            })
            .expect("agent thread");
        });
        Running { stop, thread: Some(thread), evicted, held }
    }

    fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("agent thread");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn agents_drop_a_silent_host_and_take_it_back_when_it_returns() {
    let lab = lab("clagent", 3);
    let ov = on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();
    // Granted 3 s (`lease::granted_ttl`), renewed every second.
    let ttl = Duration::from_secs(4);
    let (s1, s2) = (Recorder::default(), Recorder::default());
    let _a1 = Running::start(&lab, 0, ttl, s1.clone(), vec![local("ov", [10, 0, 9, 2], "one")]);
    let _a2 = Running::start(&lab, 1, ttl, s2.clone(), vec![local("ov", [10, 0, 9, 66], "two")]);
    let third: Vec<LocalEndpoint> = (0..3).map(|n| local("ov", [10, 0, 9, 130 + n], &format!("three{n}"))).collect();
    let third_ips: Vec<Ipv4Addr> = third.iter().map(|e| e.ip).collect();
    let mut a3 = Running::start(&lab, 2, ttl, Recorder::default(), third.clone());

    let sees_three = |s: &Recorder| third_ips.iter().all(|ip| s.hosts_seen().contains(&("host3".into(), *ip)));
    let limit = Duration::from_secs(30);
    assert!(wait_for(limit, || sees_three(&s1) && sees_three(&s2)).is_some(), "hosts 1 and 2 learn host 3's endpoints");
    // Host 2's agent may register a moment after host 3's: waited for too.
    let sees_two = || s1.hosts_seen().contains(&("host2".into(), Ipv4Addr::new(10, 0, 9, 66)));
    assert!(wait_for(limit, sees_two).is_some(), "host 1 learns host 2's endpoint: {:?}", s1.hosts_seen());
    assert!(!s1.hosts_seen().iter().any(|(h, _)| h == "host1"), "a host's own endpoints are not remote");
    let block_of = |host: &str| {
        on_host(&lab, 0, |c| c.blocks("ov")).unwrap().into_iter().find(|b| b.host == host).map(|b| b.block)
    };
    let first_block = block_of("host3").expect("host 3 holds a block");

    // Host 3 dies: it stops renewing. Its lease runs out and both other
    // hosts' sinks are told to remove each of its endpoints.
    a3.kill();
    let took = wait_for(limit, || !s1.hosts_seen().iter().chain(s2.hosts_seen().iter()).any(|(h, _)| h == "host3"));
    let took = took.expect("hosts 1 and 2 drop host 3's endpoints");
    eprintln!("host 3's endpoints dropped {took:?} after it stopped renewing (TTL {ttl:?})");
    for s in [&s1, &s2] {
        let removed: HashSet<Ipv4Addr> = s.0.lock().unwrap().removed.iter().map(|(_, _, ip)| *ip).collect();
        assert!(third_ips.iter().all(|ip| removed.contains(ip)), "remove() for each: {removed:?}");
        assert!(s.0.lock().unwrap().removed.iter().all(|(n, v, _)| n == "ov" && *v == ov.vni));
    }
    assert_eq!(block_of("host3"), None, "the block lease went with the host's lease");
    assert!(!on_host(&lab, 0, |c| c.hosts()).unwrap().iter().any(|h| h.id == "host3"));

    // Host 3 comes back: same block (nobody took it), records reappear.
    let mut a3 = Running::start(&lab, 2, ttl, Recorder::default(), third.clone());
    assert!(wait_for(limit, || sees_three(&s1) && sees_three(&s2)).is_some(), "host 3's endpoints reappear");
    assert_eq!(block_of("host3"), Some(first_block), "a returning host gets its block back");
    let held = a3.held.lock().unwrap().clone();
    assert!(!held.is_empty() && held.iter().all(|h| *h == ("ov".to_string(), first_block)), "drawn from: {held:?}");

    // Dies again. A new host leases a block meanwhile: not host 3's, which
    // waits for it while another is free.
    a3.kill();
    assert!(wait_for(limit, || block_of("host3").is_none()).is_some());
    let newcomer = |id: &str| {
        let id = id.to_string();
        on_host(&lab, 0, move |c| {
            let me = HostRecord { id, vtep: Ipv4Addr::new(192, 168, 200, 99) };
            let m = c.join(&me, ttl * 20)?;
            Ok((c.lease_block("ov", &m)?, me, m))
        })
        .unwrap()
    };
    let (fourth, _, newcomer_membership) = newcomer("newcomer");
    assert_ne!(fourth, first_block, "a dead host's block is kept for it while another is free");
    // The last free block is host 3's: the next newcomer takes it, and an
    // address host 3's sandbox three1 had.
    let (taken, intruder, m) = newcomer("intruder");
    assert_eq!(taken, first_block, "with nothing else free, host 3's block goes");
    let stolen = EndpointRecord {
        ip: third_ips[1],
        mac: [0x02, 0x42, 0, 0, 0, 0x99],
        ..endpoint(&ov, &intruder, "intruder-web")
    };
    on_host(&lab, 0, |c| c.register_endpoint(&stolen, &m)).unwrap();
    assert!(wait_for(limit, || s1.0.lock().unwrap().view.get(&("ov".into(), third_ips[1])) == Some(&stolen)).is_some());

    // Host 3 returns with no block to lease: the first holder keeps the
    // address, host 3's sandbox on it is evicted (disconnected), its other
    // sandboxes keep theirs.
    let a3 = Running::start(&lab, 2, ttl, Recorder::default(), third.clone());
    let back = [third_ips[0], third_ips[2]];
    let host3_back = || back.iter().all(|ip| s1.hosts_seen().contains(&("host3".into(), *ip)));
    assert!(wait_for(limit, host3_back).is_some(), "host 3's other sandboxes come back: {:?}", s1.hosts_seen());
    assert_eq!(*a3.evicted.lock().unwrap(), vec![third[1].clone()], "three1 was evicted");
    let (records, _) = on_host(&lab, 0, |c| c.endpoints()).unwrap();
    let at = |ip: Ipv4Addr| records.iter().filter(|e| e.ip == ip).map(|e| e.host.clone()).collect::<Vec<_>>();
    assert_eq!(at(third_ips[1]), ["intruder"], "one holder of the address in the store");
    assert_eq!(at(third_ips[0]), ["host3"]);
    for s in [&s1, &s2] {
        assert_eq!(s.0.lock().unwrap().view.get(&("ov".into(), third_ips[1])), Some(&stolen), "data paths: the holder");
    }
    assert_eq!(block_of("host3"), None, "no block was free for host 3");
    assert!(a3.held.lock().unwrap().is_empty(), "no block to draw from: {:?}", a3.held.lock().unwrap());
    let blocks: Vec<_> = on_host(&lab, 0, |c| c.blocks("ov")).unwrap().into_iter().map(|b| b.block).collect();
    let distinct: HashSet<_> = blocks.iter().collect();
    assert_eq!(blocks.len(), distinct.len(), "no block held twice: {blocks:?}");

    // The newcomer leaves, and host 3 comes back once more: it holds the
    // newcomer's block now, and its new sandboxes draw from that one, not
    // from the block it had first (the intruder's now).
    drop(a3);
    on_host(&lab, 0, |c| c.leave(&newcomer_membership)).unwrap();
    let a3 = Running::start(&lab, 2, ttl, Recorder::default(), third.clone());
    assert!(wait_for(limit, || block_of("host3") == Some(fourth)).is_some(), "host 3 leases the free block");
    assert!(
        wait_for(limit, || a3.held.lock().unwrap().last() == Some(&("ov".to_string(), fourth))).is_some(),
        "host 3 draws from its new block: {:?}",
        a3.held.lock().unwrap()
    );
}

fn info_cluster(lab: &MultiHost, i: usize) -> serde_json::Value {
    let out = lab.host(i).netpath_ok(&["info", "--format", "{{json .Cluster}}"]).unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

/// The product's agent: started by netpath itself once daemon.json names a
/// store, shown by `info`, revived after a kill without losing the lease,
/// feeding the resolver's list of other hosts' endpoints; with the store
/// down, local networks keep working; `system reset` leaves the cluster.
#[test]
fn netpath_runs_the_agent_and_local_networks_survive_a_dead_store() {
    let mut lab = lab("clproc", 2);
    lab.configure_cluster(&serde_json::json!({"cluster-lease-ttl": 5})).unwrap();
    let ov = on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();

    // Any command starts the agent; it joins and reports a live lease.
    lab.host(0).netpath_ok(&["ps"]).unwrap();
    let limit = Duration::from_secs(30);
    assert!(
        wait_for(limit, || info_cluster(&lab, 0)["LeaseState"].as_str().unwrap_or("").starts_with("alive")).is_some(),
        "agent reports a live lease: {}",
        info_cluster(&lab, 0)
    );
    let info = info_cluster(&lab, 0);
    assert_eq!(info["VTEP"], lab.host(0).ip.to_string());
    assert_eq!(info["Store"][0], lab.store_url());
    let host_id = info["HostID"].as_str().unwrap().to_string();
    assert_eq!(host_id.len(), 16, "{info}");
    let (pid, lease) = (info["Agent"]["Pid"].as_i64().unwrap(), info["Lease"].clone());
    assert!(on_host(&lab, 1, |c| c.hosts()).unwrap().iter().any(|h| h.id == host_id && h.vtep == lab.host(0).ip));
    let text = lab.host(0).netpath_ok(&["info"]).unwrap();
    assert!(text.contains(&format!("Host ID: {host_id}")) && text.contains("Lease: "), "{text}");

    // Another host's endpoint reaches this host's resolver list.
    let remote = on_host(&lab, 1, |c| {
        let me = HostRecord { id: "elsewhere".into(), vtep: lab.host(1).ip };
        let m = c.join(&me, Duration::from_secs(60))?;
        let block = c.lease_block("ov", &m)?;
        c.claim_address(&ov, block, &endpoint(&ov, &me, "far"), &m)
    })
    .unwrap();
    let list = lab.host(0).roots.state.join(netpath::cluster::agent::REMOTE_FILE);
    let listed = || netpath::cluster::agent::read_remote(&list).contains(&remote);
    assert!(wait_for(limit, listed).is_some(), "the agent lists host 2's endpoint for the resolver");

    // Killed, the agent comes back with the next command and resumes the
    // same lease: the other hosts never see this host leave.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(
        wait_for(limit, || !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| c.is_empty()))
        .is_some()
    );
    lab.host(0).netpath_ok(&["ps"]).unwrap();
    let revived = info_cluster(&lab, 0);
    assert!(revived["Agent"]["Running"] == true && revived["Agent"]["Pid"] != pid, "{revived}");
    assert!(
        wait_for(limit, || info_cluster(&lab, 0)["LeaseState"].as_str().unwrap_or("").starts_with("alive")).is_some()
    );
    assert_eq!(info_cluster(&lab, 0)["Lease"], lease, "the restarted agent resumed its lease");

    // The store goes down: bridge networks and sandboxes still work, the
    // store's clients fail with one line naming it.
    lab.etcd.as_mut().unwrap().stop().unwrap();
    lab.host(0).netpath_ok(&["network", "create", "local", "--subnet", "10.77.0.0/24"]).unwrap();
    lab.host(0).netpath_ok(&["run", "-d", "--name", "s1", "--network", "local", "sleep", "30"]).unwrap();
    lab.host(0).netpath_ok(&["rm", "-f", "s1"]).unwrap();
    lab.host(0).netpath_ok(&["network", "rm", "local"]).unwrap();
    let err = match on_host(&lab, 0, |c| c.networks()) {
        Ok(_) => panic!("the store is down"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&lab.store_url()) && !err.contains('\n'), "{err}");
    assert!(
        wait_for(limit, || info_cluster(&lab, 0)["LeaseState"].as_str().unwrap_or("").starts_with("not renewed"))
            .is_some(),
        "info says the lease is not being renewed: {}",
        info_cluster(&lab, 0)
    );

    // Back up: the agent renews again; `system reset` then leaves the
    // cluster (host record gone at once, not after the TTL).
    lab.etcd.as_mut().unwrap().restart().unwrap();
    assert!(
        wait_for(limit, || info_cluster(&lab, 0)["LeaseState"].as_str().unwrap_or("").starts_with("alive")).is_some()
    );
    lab.host(0).netpath_ok(&["system", "reset"]).unwrap();
    assert!(!on_host(&lab, 1, |c| c.hosts()).unwrap().iter().any(|h| h.id == host_id), "reset revoked the lease");
}

/// The cross-host bench's systems carry traffic, every metric: netpath's
/// overlay (built through the CLI with etcd in the lab) and Flannel-style
/// kernel VXLAN, each through its tunnel (counted on both hosts), and the
/// host-gw underlay bound, with none.
#[test]
fn cross_host_bench_smoke() {
    let out = std::env::temp_dir().join(format!("npmh-xh-{}", std::process::id()));
    let bins = bins();
    let status = std::process::Command::new(&bins.lab)
        .args(["bench-cross-host", "--smoke", "--out"])
        .arg(&out)
        .args(["--system", "netpath-overlay", "--system", "kernel-vxlan", "--system", "underlay"])
        .env(netpath_lab::Binaries::NETPATH_ENV, &bins.netpath)
        .status()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("crosshost.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    assert!(status.success(), "{rows}");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        for key in ["tput1_gbps", "tput4_gbps", "udp_pps", "tcp_rr_p99_us", "conn_per_s"] {
            assert!(row["figures"][key].as_f64().is_some_and(|v| v > 0.0), "{key}: {row}");
        }
    }
    // The tunnels carried the traffic: host 1 encapsulated it, host 2
    // decapsulated it (netpath's own counters; the kernel's VXLAN device's).
    for system in ["kernel-vxlan", "netpath-overlay"] {
        let row = rows.iter().find(|r| r["system"] == system).unwrap();
        for key in ["encapsulated_packets", "decapsulated_packets"] {
            assert!(row[key].as_u64().unwrap() > 1000, "{key}: {row}");
        }
    }
    // The bound has no tunnel.
    let bound = rows.iter().find(|r| r["system"] == "underlay").unwrap();
    assert!(bound["encapsulated_packets"].is_null(), "{bound}");
}

/// A host whose `cluster-advertise` changes while its agent runs keeps its
/// one lease: the next command takes up the agent's membership under the
/// new VTEP (the host record and the saved membership follow) instead of
/// joining with a second lease that nobody renews, whose records (the new
/// sandbox's) would be gone from the store after the TTL.
#[test]
fn a_changed_advertise_address_keeps_the_lease() {
    let ttl = 5;
    let lab = cluster_lab::configured("cladv", 1, &serde_json::json!({"cluster-lease-ttl": ttl}));
    let h = lab.host(0);
    h.netpath_ok(&["network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "ov"]).unwrap();
    let files = Files::of(&h.roots);
    assert!(
        wait_for(Duration::from_secs(30), || Membership::load(&files.membership).is_some()).is_some(),
        "the agent saved its membership"
    );
    let before = Membership::load(&files.membership).unwrap();
    assert_eq!(before.host.vtep, h.ip);

    // The host gets a second underlay address and advertises that one.
    let moved = Ipv4Addr::new(192, 168, 200, 111);
    cluster_lab::host_out(&lab, 0, &["ip", "addr", "add", &format!("{moved}/24"), "dev", HOST_UPLINK]);
    let config = serde_json::json!({
        "cluster-store": lab.store_url(),
        "cluster-advertise": moved.to_string(),
        "cluster-lease-ttl": ttl,
    });
    h.configure(&config.to_string()).unwrap();
    h.netpath_ok(&["run", "-d", "--name", "s", "--network", "ov"]).unwrap();

    let after = Membership::load(&files.membership).unwrap();
    assert_eq!((after.lease, after.host.vtep), (before.lease, moved), "one lease, under the new VTEP");
    let hosts = on_host(&lab, 0, |c| c.hosts()).unwrap();
    let vteps: Vec<Ipv4Addr> = hosts.iter().filter(|r| r.id == before.host.id).map(|r| r.vtep).collect();
    assert_eq!(vteps, [moved], "{hosts:?}");
    // Past the TTL the sandbox's record is still there: the agent renews
    // the lease it is bound to.
    std::thread::sleep(Duration::from_secs(ttl + 2));
    let (eps, _) = on_host(&lab, 0, |c| c.endpoints()).unwrap();
    assert!(eps.iter().any(|e| e.name == "s" && e.vtep == moved), "{eps:?}");
}

/// Every process of a host takes up one membership: an agent and commands
/// that start at once (here six threads, each with its own connection)
/// all end with the first one's lease, never with a second lease that
/// nobody renews (whose records would leave every host after the TTL).
#[test]
fn processes_starting_at_once_share_one_lease() {
    let lab = lab("cltake", 1);
    let files = Files::of(&lab.host(0).roots);
    let me = host_record(&lab, 0);
    let leases: Vec<i64> = std::thread::scope(|s| {
        let takers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| on_host(&lab, 0, |c| c.take_up(&me, Duration::from_secs(30), &files.membership)).unwrap())
            })
            .collect();
        takers.into_iter().map(|t| t.join().unwrap().lease).collect()
    });
    assert!(leases.iter().all(|l| *l == leases[0]), "one lease for all: {leases:?}");
    assert_eq!(Membership::load(&files.membership).map(|m| m.lease), Some(leases[0]));
    let hosts = on_host(&lab, 0, |c| c.hosts()).unwrap();
    assert_eq!(hosts.iter().filter(|h| h.id == me.id).count(), 1, "{hosts:?}");
}
