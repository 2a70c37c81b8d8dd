//! Teardown runs every step and reports every failure. Something removed
//! behind netpath's back counts as removed (what a user wants for "already
//! gone"); a real failure (a link pin path that is a non-empty directory, a
//! busy mount in the sandbox's files) is named on stderr, together with the
//! other one, while everything else still goes.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use netpath_common::{EndpointKey, program_names};
use netpath_tests::{Lab, host_ifname, lab, output, sandboxes, words};

/// A bind mount of a sandbox file onto itself: the file cannot be removed
/// while it stays (EBUSY). Unmounted when dropped, even if the test failed.
struct BusyMount(PathBuf);

impl BusyMount {
    fn on(file: &Path) -> BusyMount {
        let status = Command::new("mount").arg("--bind").arg(file).arg(file).status().unwrap();
        assert!(status.success(), "bind-mounting {}", file.display());
        BusyMount(file.to_path_buf())
    }
}

impl Drop for BusyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn link_pin(lab: &Lab, host_ifname: &str) -> PathBuf {
    lab.roots.bpf.join("links").join(format!("{host_ifname}@{}", program_names::FROM_CONTAINER))
}

/// Replaces the sandbox's TCX link pin by a non-empty directory: the link
/// detaches (its pin is gone) and the path can no longer be unlinked.
fn block_pin(pin: &Path) {
    std::fs::remove_file(pin).unwrap_or_else(|e| panic!("removing {}: {e}", pin.display()));
    std::fs::create_dir_all(pin.join("blocker")).unwrap();
}

fn host_links(lab: &Lab) -> Vec<String> {
    lab.in_host(|r| r.link_names()).unwrap()
}

fn endpoint_count(lab: &Lab) -> usize {
    lab.datapath().endpoints().unwrap().keys().count()
}

fn has_endpoint(lab: &Lab, ip: [u8; 4]) -> bool {
    lab.datapath().endpoints().unwrap().keys().flatten().any(|k: EndpointKey| k.ipv4 == ip)
}

/// A sandbox `name` on `net` with one published port; returns its host veth.
fn sandbox_with_port(lab: &Lab, name: &str, net: &str, ip: &str, port: &str) -> String {
    lab.netpath_ok(&words(&format!("run -d --name {name} --network {net} --ip {ip} -p {port}:80"))).unwrap();
    host_ifname(lab, name).unwrap()
}

#[test]
fn gone_behind_our_back_counts_as_removed() {
    let lab = lab("gone");
    lab.netpath_ok(&words("network create n0 --subnet 10.34.0.0/24")).unwrap();
    let veth = sandbox_with_port(&lab, "s0", "n0", "10.34.0.5", "8090");
    let pin = link_pin(&lab, &veth);
    assert!(pin.exists(), "{}", pin.display());
    lab.in_host(|r| r.delete_by_name(&veth)).unwrap();
    std::fs::remove_file(&pin).unwrap();
    let (code, _, stderr) = output(&mut lab.netpath(&["rm", "-f", "s0"]).unwrap()).unwrap();
    assert_eq!((code, stderr.as_str()), (0, ""), "already gone is removed, not a failure");
    assert!(!has_endpoint(&lab, [10, 34, 0, 5]));
    assert_eq!(lab.datapath().published().unwrap().keys().count(), 0);
    assert!(!lab.roots.netns_dir().join("s0").exists());
}

#[test]
fn rm_reports_both_failures_and_removes_everything_else() {
    let lab = lab("teardown-rm");
    lab.netpath_ok(&words("network create n1 --subnet 10.33.0.0/24")).unwrap();
    let veth = sandbox_with_port(&lab, "s1", "n1", "10.33.0.5", "8080");
    let keep = sandbox_with_port(&lab, "k1", "n1", "10.33.0.6", "8081");
    let pin = link_pin(&lab, &veth);
    let files = lab.roots.sandbox_dir("s1");
    assert!(pin.exists() && files.join("hosts").exists());
    let endpoints_before = endpoint_count(&lab);

    // One device gone behind netpath's back (not a failure), and two real
    // failures: the pin path blocked, a file of the sandbox busy.
    lab.in_host(|r| r.delete_by_name(&veth)).unwrap();
    block_pin(&pin);
    let busy = BusyMount::on(&files.join("hosts"));

    let (code, stdout, stderr) = output(&mut lab.netpath(&["rm", "-f", "s1"]).unwrap()).unwrap();
    assert_ne!(code, 0, "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("2 steps failed"), "{stderr}");
    assert!(stderr.contains(&pin.display().to_string()), "names the pin: {stderr}");
    assert!(stderr.contains("sandbox files") && stderr.contains(&files.display().to_string()), "{stderr}");
    assert!(!stderr.contains(&format!("veth {veth}")), "a device already gone is no failure: {stderr}");

    // Everything else of s1 is gone; k1 and the network are untouched.
    let names: Vec<String> = sandboxes(&lab).unwrap().iter().map(|s| s["name"].as_str().unwrap().into()).collect();
    assert_eq!(names, ["k1"]);
    assert!(!lab.roots.netns_dir().join("s1").exists() && !lab.roots.uts_dir().join("s1").exists());
    assert!(!has_endpoint(&lab, [10, 33, 0, 5]) && has_endpoint(&lab, [10, 33, 0, 6]));
    assert_eq!(endpoint_count(&lab), endpoints_before - 1);
    let published: Vec<u16> = lab.datapath().published().unwrap().keys().flatten().map(|k| k.host_port).collect();
    assert_eq!(published, [8081]);
    let links = host_links(&lab);
    assert!(!links.contains(&veth) && links.contains(&keep), "{links:?}");
    assert!(link_pin(&lab, &keep).exists());

    // Once the obstacles are gone, the rest goes cleanly.
    drop(busy);
    std::fs::remove_dir_all(&pin).unwrap();
    lab.netpath_ok(&["rm", "-f", "k1"]).unwrap();
    lab.netpath_ok(&["network", "rm", "n1"]).unwrap();
}

#[test]
fn system_reset_reports_both_failures_and_removes_everything_else() {
    let lab = lab("teardown-reset");
    lab.netpath_ok(&words("network create n2 --subnet 10.35.0.0/24")).unwrap();
    let veth = sandbox_with_port(&lab, "s2", "n2", "10.35.0.5", "8082");
    lab.netpath_ok(&words("run -d --name d2")).unwrap();
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["network", "inspect", "n2", "bridge"]).unwrap()).unwrap();
    let bridges: Vec<String> =
        inspect.as_array().unwrap().iter().map(|n| n["Bridge"].as_str().unwrap().into()).collect();
    let pin = link_pin(&lab, &veth);
    let files = lab.roots.sandbox_dir("s2");

    lab.in_host(|r| r.delete_by_name(&veth)).unwrap();
    block_pin(&pin);
    let _busy = BusyMount::on(&files.join("hosts"));

    let (code, _, stderr) = output(&mut lab.netpath(&["system", "reset"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("2 steps failed"), "{stderr}");
    assert!(stderr.contains("sandbox s2") && stderr.contains(&pin.display().to_string()), "{stderr}");
    assert!(stderr.contains(&files.display().to_string()), "{stderr}");

    // Every sandbox, network, bridge, namespace and pin is gone.
    assert!(sandboxes(&lab).unwrap().is_empty());
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(lab.roots.state_file()).unwrap()).unwrap();
    assert!(state["networks"].as_object().unwrap().is_empty(), "{state}");
    let links = host_links(&lab);
    for gone in bridges.iter().chain([&veth]) {
        assert!(!links.contains(gone), "{gone} left: {links:?}");
    }
    assert!(!lab.roots.bpf.exists(), "pins left under {}", lab.roots.bpf.display());
    let namespaces: Vec<_> = std::fs::read_dir(lab.roots.netns_dir()).unwrap().flatten().collect();
    assert!(namespaces.is_empty(), "{namespaces:?}");
}

#[test]
fn network_rm_goes_on_past_a_network_in_use() {
    let lab = lab("teardown-netrm");
    lab.netpath_ok(&words("network create busy --subnet 10.36.0.0/24")).unwrap();
    lab.netpath_ok(&words("network create idle --subnet 10.37.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name s3 --network busy")).unwrap();
    let (code, stdout, stderr) = output(&mut lab.netpath(&["network", "rm", "busy", "idle"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert_eq!(stdout.trim(), "idle", "the network not in use goes");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("removing busy") && stderr.contains("active endpoints: s3"), "{stderr}");
    let ls = lab.netpath_ok(&["network", "ls"]).unwrap();
    assert!(ls.contains("busy") && !ls.contains("idle"), "{ls}");
}
