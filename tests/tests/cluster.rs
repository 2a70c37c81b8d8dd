//! The cluster store (issue #12): a multi-host lab (hosts on one underlay
//! switch) with Debian's etcd started in the lab, listening on a lab address
//! only. Every connection to the store is made from a thread inside a lab
//! host's namespace, so nothing leaves the lab.
use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
    sync::Barrier,
};

use anyhow::Result;
use netpath::{
    cluster::{Cluster, EndpointRecord, HostRecord, Ipv4Network, OverlayNetwork},
    netns,
};
use netpath_lab::multihost::MultiHost;
use netpath_tests::bins;

fn lab(tag: &str, hosts: usize) -> MultiHost {
    let mut lab = MultiHost::create(tag, hosts, &bins()).expect("building the multi-host lab");
    lab.start_etcd().expect("starting etcd in the lab");
    lab
}

/// Runs `f` with a fresh connection to the lab's store, made (and used, and
/// dropped) on a thread inside host `i`'s namespace.
fn on_host<T: Send>(lab: &MultiHost, i: usize, f: impl FnOnce(&Cluster) -> Result<T> + Send) -> Result<T> {
    let url = lab.store_url();
    netns::run_in(&lab.host(i).ns, || f(&Cluster::connect(&[url])?))
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
    on_host(&lab, 1, |c| c.release_endpoint("ov", ip)).unwrap();
    on_host(&lab, 2, |c| c.remove_network("ov")).unwrap();
    for i in 0..3 {
        let names: Vec<String> = on_host(&lab, i, |c| c.networks()).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["second"], "host {}", i + 1);
    }
    // The name and subnet are free again.
    on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();
}

#[test]
fn concurrent_hosts_never_share_a_block_or_an_address() {
    let lab = lab("clrace", 3);
    let ov = on_host(&lab, 0, |c| c.create_network(&overlay("ov", "10.0.9.0/24", 26))).unwrap();
    // One block only: of two hosts racing for it, exactly one wins.
    let single = on_host(&lab, 0, |c| c.create_network(&overlay("single", "10.0.10.0/24", 24))).unwrap();

    let barrier = Barrier::new(3);
    let results: Vec<Result<(Ipv4Network, Result<Ipv4Network>, Vec<Ipv4Addr>)>> = std::thread::scope(|s| {
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
