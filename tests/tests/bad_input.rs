//! Bad input: a non-zero exit, a one-line reason, and nothing changed —
//! same `ps`, `network ls`, links in the host namespace, and pins.
use netpath_tests::{Lab, lab, output};

#[derive(Debug, PartialEq)]
struct Snapshot {
    ps: String,
    networks: String,
    links: Vec<String>,
    pins: Vec<String>,
    namespaces: Vec<String>,
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e.path().display().to_string());
        }
    }
    out.sort();
    out
}

fn snapshot(lab: &Lab) -> Snapshot {
    let mut links = lab.in_host(|r| r.link_names()).unwrap();
    links.sort();
    Snapshot {
        ps: lab.netpath_ok(&["ps"]).unwrap(),
        networks: lab.netpath_ok(&["network", "ls"]).unwrap(),
        links,
        pins: listing(&lab.roots.bpf),
        namespaces: listing(&lab.roots.run),
    }
}

const LONG: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
                    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
                    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let lab = lab("badinput");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.30.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "s1", "--network", "n1", "--ip", "10.30.0.10"]).unwrap();
    let before = snapshot(&lab);
    let cases: &[(&[&str], &str)] = &[
        (&["network", "create", "x", "--subnet", "10.0.0.0/33"], "invalid CIDR"),
        (&["network", "create", "x", "--subnet", "not-a-cidr"], "invalid CIDR"),
        (&["network", "create", "x", "--subnet", "10.40.0.0/24", "--gateway", "10.41.0.1"], "gateway"),
        (&["network", "create", "x", "--subnet", "10.30.0.128/25"], "overlaps"),
        (&["network", "create", "x", "--subnet", "172.17.3.0/24"], "overlaps"),
        (&["network", "create", "n1", "--subnet", "10.50.0.0/24"], "already exists"),
        (&["network", "create", "bridge"], "already exists"),
        (&["run", "-d", "--name", "s1", "--network", "n1"], "already in use"),
        (&["run", "-d", "--name", "s2", "--network", "n1", "--ip", "10.99.0.5"], "not a usable address"),
        (&["run", "-d", "--name", "s2", "--network", "n1", "--ip", "10.30.0.10"], "already in use"),
        (&["run", "-d", "--name", "s2", "--network", "n1", "--ip", "10.30.0.1"], "already in use"),
        (&["run", "-d", "--name", "s2", "--network", "nosuch"], "not found"),
        (&["run", "-d", "--name", "bad name"], "invalid name"),
        (&["run", "-d", "--name", "s2", "--mac-address", "zz:00:00:00:00:00"], "invalid MAC"),
        (&["rm", "nosuch"], "No such container"),
        (&["network", "rm", "nosuch"], "not found"),
        (&["network", "rm", "n1"], "active endpoints"),
        (&["network", "inspect", "nosuch"], "not found"),
        (&["exec", "nosuch", "--", "true"], "No such container"),
        (&["network", "create", "x", "-d", "ipvlan"], "not supported"),
        (&["network", "create", "x", "-d", "overlay"], "need a cluster store"),
        (&["network", "create", "x", "-d", "macvlan", "--subnet", "10.51.0.0/24"], "parent"),
        (
            &["network", "create", "x", "-d", "macvlan", "-o", "parent=nosuch0", "--subnet", "10.51.0.0/24"],
            "does not exist",
        ),
        (&["network", "connect", "nosuch", "s1"], "not found"),
        (&["network", "connect", "n1", "nosuch"], "No such container"),
        (&["network", "connect", "n1", "s1"], "already connected"),
        (&["network", "disconnect", "n1", "nosuch"], "No such container"),
        (&["run", "-d", "--name", "s2", "--network", "container:nosuch"], "No such container"),
        (&["run", "-d", "--name", "s2", "--link", "nosuch:db"], "could not link"),
        (&["run", "-d", "--name", "s2", "-p", "70000"], "invalid container port"),
        (&["run", "-d", "--name", "s2", "-p", "8080:80", "-p", "8080:81"], "already allocated"),
        (&["run", "-d", "--name", "s2", "--dns", "not-an-ip"], "invalid DNS"),
        (&["run", "-d", "--name", "s2", "--add-host", "no-address"], "invalid --add-host"),
        (&["run", "-d", "--name", "s2", "--network", "host", "-p", "80"], "conflicting options"),
        // Subnets the host uses or that mean something everywhere.
        (&["network", "create", "x", "--subnet", "198.18.0.0/24"], "overlaps with the host's address 198.18.0.2/24"),
        (&["network", "create", "x", "--subnet", "198.18.0.128/25"], "overlaps with the host's address"),
        (&["network", "create", "x", "--subnet", "127.5.0.0/16"], "loopback"),
        (&["network", "create", "x", "--subnet", "224.1.0.0/24"], "multicast"),
        (&["network", "create", "x", "--subnet", "240.0.0.0/24"], "reserved"),
        (&["network", "create", "x", "--subnet", "169.254.3.0/24"], "link-local"),
        (&["network", "create", "x", "--subnet", "0.0.0.0/0"], "this network"),
        // Docker's words.
        (
            &["run", "-d", "--name", "s2", "--ip", "172.17.0.50"],
            "user specified IP address is supported on user defined networks only",
        ),
        (&["network", "connect", "--ip", "172.17.0.51", "bridge", "s1"], "user defined networks only"),
        (&["run", "-d", "--name", "s2", "-p", "10.9.9.9:8080:80"], "listen tcp4 10.9.9.9:8080: bind: cannot assign"),
        (&["run", "-d", "--name", "s2", "--network", "n1", "-p", "10.9.9.9::80/udp"], "cannot assign requested"),
        (&["run", "-d", "--name", LONG], "at most 128 characters"),
        (&["network", "create", LONG], "at most 128 characters"),
        (&["run", "-d", "--name", "s2", "--network", "n1", "--network-alias", LONG], "at most 128 characters"),
        (&["run", "-d", "--name", "s2", "--mac-address", "00:00:00:00:00:00"], "invalid MAC"),
        (&["run", "-d", "--name", "s2", "--mac-address", "ff:ff:ff:ff:ff:ff"], "invalid MAC"),
    ];
    for (args, reason) in cases {
        let (code, stdout, stderr) = output(&mut lab.netpath(args).unwrap()).unwrap();
        assert_ne!(code, 0, "netpath {args:?} should fail; stdout {stdout}");
        assert_eq!(stderr.lines().count(), 1, "one-line reason for {args:?}: {stderr:?}");
        // Lookup misses read as Docker's (`Error: No such container: X`).
        assert!(stderr.starts_with("netpath: ") || stderr.starts_with("Error"), "{stderr}");
        assert!(stderr.contains(reason), "netpath {args:?}: {stderr:?} should mention {reason:?}");
        assert_eq!(snapshot(&lab), before, "netpath {args:?} changed something");
    }
    // Several names, each failing for its own reason (one in use, one
    // missing): one line each, as Docker prints them, and nothing changes.
    let (code, _, stderr) = output(&mut lab.netpath(&["network", "rm", "n1", "nosuch"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr:?}");
    assert!(lines.iter().any(|l| l.contains("network nosuch not found")), "{stderr:?}");
    assert!(lines.iter().any(|l| l.contains("n1") && l.contains("active endpoints")), "{stderr:?}");
    assert_eq!(snapshot(&lab), before, "network rm n1 nosuch changed something");
}

#[test]
fn a_failure_half_way_rolls_back() {
    let lab = lab("rollback");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.31.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "s1", "--network", "n1"]).unwrap();
    let bridge = lab.netpath_ok(&["network", "inspect", "n1"]).unwrap();
    let bridge: serde_json::Value = serde_json::from_str(&bridge).unwrap();
    let bridge = bridge[0]["Bridge"].as_str().unwrap().to_string();
    let before = snapshot(&lab);
    let endpoints_before = lab.datapath().endpoints().unwrap().keys().count();
    // Take the bridge away behind netpath's back: the new sandbox's veth pair
    // and namespaces get created before the attach to the bridge fails.
    lab.in_host(|r| r.delete_by_name(&bridge)).unwrap();
    let mut expected = before;
    expected.links.retain(|l| l != &bridge);
    let (code, _, stderr) =
        output(&mut lab.netpath(&["run", "-d", "--name", "s2", "--network", "n1"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert!(stderr.contains(&bridge), "{stderr}");
    assert_eq!(snapshot(&lab), expected, "nothing of s2 is left");
    assert_eq!(lab.datapath().endpoints().unwrap().keys().count(), endpoints_before);
}

/// `rm` and `network rm` of several names, some missing: the existing ones
/// are removed (and printed), the missing ones named, the exit non-zero.
#[test]
fn removing_several_goes_on_past_missing_names() {
    let lab = lab("rmmany");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.32.0.0/24"]).unwrap();
    lab.netpath_ok(&["network", "create", "n2", "--subnet", "10.33.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1"]).unwrap();
    let (code, stdout, stderr) = output(&mut lab.netpath(&["rm", "-f", "a", "nosuch"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert_eq!(stdout.trim(), "a");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr, "Error: No such container: nosuch\n");
    assert!(!lab.netpath_ok(&["ps"]).unwrap().contains(" a "), "a is gone");

    let (code, stdout, stderr) = output(&mut lab.netpath(&["network", "rm", "nosuch", "n2", "n1"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["n2", "n1"]);
    assert!(stderr.contains("network nosuch not found"), "{stderr}");
    let networks = lab.netpath_ok(&["network", "ls"]).unwrap();
    assert!(!networks.contains("n1") && !networks.contains("n2"), "{networks}");
}

/// Listings into a pipe the reader already closed end quietly (no panic
/// about a broken pipe).
#[test]
fn listings_into_a_closed_pipe_end_quietly() {
    let lab = lab("pipe");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.34.0.0/24"]).unwrap();
    for args in [&["network", "inspect", "n1"][..], &["network", "ls"], &["ps"], &["conntrack", "ls"]] {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = lab.netpath(args).unwrap().stdout(std::process::Stdio::from(write)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "netpath {args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "netpath {args:?}: {stderr}");
    }
}

/// An MTU below IPv6's minimum works (the devices simply have no IPv6).
#[test]
fn small_mtu_networks_work() {
    let lab = lab("smallmtu");
    lab.netpath_ok(&["network", "create", "small", "--subnet", "10.35.0.0/24", "--mtu", "1000"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "small"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "b", "--network", "small"]).unwrap();
    let link = output(lab.sandbox_cmd("a", "ip").unwrap().args(["link", "show", "eth0"])).unwrap().1;
    assert!(link.contains("mtu 1000"), "{link}");
    let ping = output(lab.sandbox_cmd("a", "ping").unwrap().args(["-c", "2", "-i", "0.2", "-W", "1", "10.35.0.3"]));
    assert_eq!(ping.unwrap().0, 0, "a reaches b");
}
