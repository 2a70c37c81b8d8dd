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
        (&["network", "create", "x", "-d", "overlay"], "not supported"),
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
