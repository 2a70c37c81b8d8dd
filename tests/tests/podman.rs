//! Podman 4.3 with the CNI backend and netpath's plugin (a private
//! containers.conf named by CONTAINERS_CONF, its own roots, runc):
//! `podman run --network NET -p 8080:80` is reachable from the outside (the
//! client's own address seen) and from the lab host, two containers talk by
//! address and by name, and `podman rm` leaves nothing of netpath's.

use netpath_lab::bench::systems::{
    engine::Engine,
    podman_netpath::{self, NETWORK, PodmanNetpath},
};
use netpath_tests::{
    At, bins, datapath_entries, lab, output, probe, probe_in, sandboxes, send_line, sink_line, tcp_pair, words,
};
use serde_json::Value;

const GATEWAY: &str = "10.66.0.1";

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
    let (r, s) = tcp_pair(
        probe_in(&lab, &web_ns, &sink_line(80)),
        probe(&lab, At::Outside, &words(&send_line("198.18.0.2:8080"))),
    );
    assert_eq!(r["peer"], s["local"], "the container sees the real client");
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.1:"), "{r}");
    // And from the lab host, to its own address and to loopback.
    for to in ["198.18.0.2:8080", "127.0.0.1:8080"] {
        tcp_pair(probe_in(&lab, &web_ns, &sink_line(80)), probe(&lab, At::HostCgroup, &words(&send_line(to))));
    }
    // The two containers talk by address, and by name through netpath's
    // resolver (Podman passes the container name as K8S_POD_NAME).
    let (r, _) = tcp_pair(
        probe_in(&lab, &web_ns, &sink_line(7400)),
        probe_in(&lab, &cli_ns, &send_line(&format!("{web_ip}:7400"))),
    );
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{cli_ip}:")), "{r}");
    let (code, out, err) = output(&mut probe_in(&lab, &cli_ns, &format!("dig --name web --server {GATEWAY}"))).unwrap();
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
    let (r, _) = tcp_pair(
        probe(&lab, At::Outside, &words(&sink_line(7401))),
        probe_in(&lab, &cli_ns, &send_line("198.18.0.1:7401")),
    );
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
