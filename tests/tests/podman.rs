//! Podman 4.3 with the CNI backend and netpath's plugin (a private
//! containers.conf named by CONTAINERS_CONF, its own roots, runc):
//! `podman run --network NET -p 8080:80` is reachable from the outside (the
//! client's own address seen) and from the lab host, two containers talk by
//! address and by name, and `podman rm` leaves nothing of netpath's.
use std::path::Path;

use netpath_lab::bench::systems::{
    engine::Engine,
    podman_netpath::{self, NETWORK, PodmanNetpath},
};
use netpath_tests::{At, Lab, bins, lab, output, probe, sandboxes, transfer, words};
use serde_json::Value;

const GATEWAY: &str = "10.66.0.1";

/// `netpath-lab PROBE ...` in the namespace at `ns`.
fn in_ns(lab: &Lab, ns: &Path, args: &str) -> std::process::Command {
    let mut cmd = netpath::netns::Join::net(ns).command(&lab.lab_bin).unwrap();
    cmd.args(words(args));
    cmd
}

fn tcp(sink: std::process::Command, send: std::process::Command) -> (Value, Value) {
    let (r, s) = transfer(sink, send).unwrap();
    assert!(r["bytes"] == 4096 && r["sha256"] == s["sha256"], "payload mismatch: {r} vs {s}");
    (r, s)
}

fn send(to: &str) -> String {
    format!("tcp-send --to {to} --bytes 4096 --timeout 5")
}

fn sink(port: u16) -> String {
    format!("tcp-sink --port {port} --timeout 10")
}

fn datapath_entries(lab: &Lab, ip: [u8; 4]) -> usize {
    let dp = lab.datapath();
    let endpoint = dp.endpoints().unwrap().get(&netpath_common::EndpointKey { ipv4: ip }, 0).is_ok();
    let published = dp.published().unwrap().iter().flatten().filter(|(_, t)| t.addr == ip).count();
    usize::from(endpoint) + published
}

#[test]
fn podman_containers_on_netpath_cni() {
    let bins = bins();
    assert!(podman_netpath::available(&bins), "podman, conmon, runc, busybox-static or netpath-cni missing");
    let lab = lab("podman");
    let links_before = lab.in_host(|r| r.link_names()).unwrap();
    let pm = PodmanNetpath::new(&lab, &bins, "10.66.0.0/24").unwrap();
    pm.import_busybox().unwrap();
    pm.run_sleeper("web", &["8080:80".to_string()]).unwrap();
    pm.run_sleeper("cli", &[]).unwrap();
    let (web_ns, cli_ns) = (pm.netns_of("web").unwrap(), pm.netns_of("cli").unwrap());
    let web_ip = pm.ip_of("web").unwrap();
    let cli_ip = pm.ip_of("cli").unwrap();
    assert_eq!(web_ip.octets()[..3], [10, 66, 0], "podman's address is netpath's: {web_ip}");

    // netpath holds one external record per container, made by the plugin.
    let recs = sandboxes(&lab).unwrap();
    assert_eq!(recs.len(), 2, "{recs:?}");
    for r in &recs {
        assert_eq!(r["mode"]["external"]["owner"], "cni", "{r}");
        assert_eq!(r["attachments"][0]["network"], NETWORK);
    }

    // The published port from the outside: the container sees the client.
    let (r, s) = tcp(in_ns(&lab, &web_ns, &sink(80)), probe(&lab, At::Outside, &words(&send("198.18.0.2:8080"))));
    assert_eq!(r["peer"], s["local"], "the container sees the real client");
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.1:"), "{r}");
    // And from the lab host, to its own address and to loopback.
    for to in ["198.18.0.2:8080", "127.0.0.1:8080"] {
        tcp(in_ns(&lab, &web_ns, &sink(80)), probe(&lab, At::HostCgroup, &words(&send(to))));
    }
    // The two containers talk by address, and by name through netpath's
    // resolver (Podman passes the container name as K8S_POD_NAME).
    let (r, _) = tcp(in_ns(&lab, &web_ns, &sink(7400)), in_ns(&lab, &cli_ns, &send(&format!("{web_ip}:7400"))));
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{cli_ip}:")), "{r}");
    let (code, out, err) = output(&mut in_ns(&lab, &cli_ns, &format!("dig --name web --server {GATEWAY}"))).unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["answers"], serde_json::json!([web_ip.to_string()]), "{v}");
    // Podman puts the result's nameserver (netpath's resolver) first in the
    // container's resolv.conf: the container's own lookup finds its peer.
    let resolv = pm.podman(&["exec", "cli", "cat", "/etc/resolv.conf"]).unwrap();
    assert_eq!(resolv.lines().next(), Some(format!("nameserver {GATEWAY}").as_str()), "{resolv}");
    let looked = pm.podman(&["exec", "cli", "nslookup", "web"]).unwrap();
    assert!(looked.contains(&format!("Address: {web_ip}")), "{looked}");
    // And the outside, masqueraded.
    let (r, _) = tcp(probe(&lab, At::Outside, &words(&sink(7401))), in_ns(&lab, &cli_ns, &send("198.18.0.1:7401")));
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.2:"), "masqueraded: {r}");

    // podman rm: every DEL ran, nothing of netpath's is left for them.
    assert_eq!(datapath_entries(&lab, web_ip.octets()), 2);
    pm.podman(&["rm", "-f", "-t", "0", "web", "cli"]).unwrap();
    assert!(sandboxes(&lab).unwrap().is_empty(), "records left");
    assert_eq!(datapath_entries(&lab, web_ip.octets()), 0);
    assert_eq!(datapath_entries(&lab, cli_ip.octets()), 0);
    let veths: Vec<String> = lab
        .in_host(|r| r.link_names())
        .unwrap()
        .into_iter()
        .filter(|l| !links_before.contains(l) && l.starts_with("veth"))
        .collect();
    assert!(veths.is_empty(), "host veths left: {veths:?}");
}
