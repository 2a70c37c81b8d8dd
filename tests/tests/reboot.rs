//! A reboot, simulated: the lab host namespace recreated (every device,
//! program attachment and process in it gone), the run directory and the
//! bpf pins emptied, the state kept. The first command restores: networks
//! are listed as before, sandboxes whose namespaces are gone are removed
//! (and said so), `run -p` works on every network with its port reachable
//! from outside, and `rm` and `system reset` work, with or without pins.
use netpath_lab::fixture::HOST_UPLINK_IP;
use netpath_tests::{At, Lab, lab, output, sandboxes, tcp_check, words};

/// `run -d --name NAME --network NET -p PORT:80`, then a transfer from the
/// outside to PORT checked at a sink in the sandbox.
fn run_reachable(lab: &Lab, name: &str, net: &str, port: u16) {
    lab.netpath_ok(&words(&format!("run -d --name {name} --network {net} -p {port}:80"))).unwrap();
    let to = format!("{HOST_UPLINK_IP}:{port}");
    tcp_check(lab, At::Sandbox(name), 80, At::Outside, &to, 10_000).unwrap();
}

#[test]
fn the_first_command_after_a_reboot_restores() {
    let lab = lab("reboot");
    lab.netpath_ok(&words("network create n1 --subnet 10.51.0.0/24")).unwrap();
    lab.netpath_ok(&words("network create n2 --subnet 10.52.0.0/24 --internal")).unwrap();
    run_reachable(&lab, "a", "n1", 8081);
    run_reachable(&lab, "b", "bridge", 8082);
    lab.netpath_ok(&words("run -d --name c --network n1 -- sleep 600")).unwrap();
    let networks = lab.netpath_ok(&["network", "ls"]).unwrap();
    let inspect = lab.netpath_ok(&words("network inspect n1 n2 bridge")).unwrap();

    lab.reboot().unwrap();
    let (code, ls, stderr) = output(&mut lab.netpath(&["network", "ls"]).unwrap()).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ls, networks);
    for name in ["a", "b", "c"] {
        assert!(stderr.contains(&format!("sandbox {name}: its namespaces are gone")), "{stderr}");
    }
    assert!(sandboxes(&lab).unwrap().is_empty(), "lost sandboxes are removed");
    // Containers are gone, not the networks' identity and configuration.
    let after: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&words("network inspect n1 n2 bridge")).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    for (b, a) in before.as_array().unwrap().iter().zip(after.as_array().unwrap()) {
        for key in ["Id", "Name", "Driver", "IPAM", "Internal", "Options"] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
    // `run -p` on every network that reaches the outside, the same ports again.
    run_reachable(&lab, "a", "n1", 8081);
    run_reachable(&lab, "b", "bridge", 8082);
    lab.netpath_ok(&words("run -d --name i --network n2")).unwrap();
    // Same-network traffic goes through the restored data path.
    let ip_a = sandboxes(&lab).unwrap().iter().find(|s| s["name"] == "a").unwrap()["attachments"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    lab.netpath_ok(&words("run -d --name a2 --network n1")).unwrap();
    tcp_check(&lab, At::Sandbox("a"), 9000, At::Sandbox("a2"), &format!("{ip_a}:9000"), 10_000).unwrap();
    lab.netpath_ok(&["rm", "-f", "a2"]).unwrap();

    // `rm` without pins (bpffs emptied, no reboot, so nothing restores).
    std::fs::remove_dir_all(&lab.roots.bpf).unwrap();
    let (code, out, stderr) = output(&mut lab.netpath(&["rm", "-f", "b"]).unwrap()).unwrap();
    assert_eq!((code, out.trim(), stderr.as_str()), (0, "b", ""));
    // `system restore` brings the data path back on demand.
    lab.netpath_ok(&["system", "restore"]).unwrap();
    assert!(lab.datapath().is_loaded());
    run_reachable(&lab, "b", "bridge", 8082);
    // The sandbox that lived through it has its data path entries back:
    // its published port and same-network traffic work.
    tcp_check(&lab, At::Sandbox("a"), 80, At::Outside, &format!("{HOST_UPLINK_IP}:8081"), 10_000).unwrap();
    lab.netpath_ok(&words("run -d --name a3 --network n1")).unwrap();
    tcp_check(&lab, At::Sandbox("a"), 9000, At::Sandbox("a3"), &format!("{ip_a}:9000"), 10_000).unwrap();

    // `system reset` right after a reboot, before any other command.
    lab.reboot().unwrap();
    let (code, _, stderr) = output(&mut lab.netpath(&["system", "reset"]).unwrap()).unwrap();
    assert_eq!(code, 0, "{stderr}");
    let links = lab.in_host(|r| r.link_names()).unwrap();
    assert_eq!(links.len(), 2, "only lo and the uplink: {links:?}");
    assert!(!lab.roots.bpf.exists());
}
