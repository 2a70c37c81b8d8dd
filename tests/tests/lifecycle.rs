//! Sandbox and network lifecycle: commands in sandboxes, the default network
//! from daemon.json, BTF-typed pins, no firewall rules, and nothing left after
//! everything is removed.
use netpath_tests::{Lab, lab, output};

fn host_out(lab: &Lab, argv: &[&str]) -> String {
    let mut cmd = lab.host_cmd(argv[0]).unwrap();
    cmd.args(&argv[1..]);
    let (code, stdout, stderr) = output(&mut cmd).unwrap();
    assert_eq!(code, 0, "{argv:?}: {stderr}");
    stdout
}

fn assert_no_firewall_rules(lab: &Lab) {
    let rules = host_out(lab, &["iptables-save"]);
    assert!(!rules.lines().any(|l| l.starts_with("-A") || l.starts_with(':')), "iptables: {rules}");
    let ruleset = host_out(lab, &["nft", "list", "ruleset"]);
    assert!(ruleset.trim().is_empty(), "nft: {ruleset}");
}

#[test]
fn commands_run_inside_sandboxes() {
    let lab = lab("exec");
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.32.0.0/24", "--mtu", "1450"]).unwrap();
    lab.netpath_ok(&[
        "run",
        "-d",
        "--name",
        "s1",
        "--network",
        "n1",
        "-h",
        "box.example",
        "--mac-address",
        "02:11:22:33:44:55",
    ])
    .unwrap();
    let (code, out, _) = output(&mut lab.netpath(&["exec", "s1", "--", "hostname"]).unwrap()).unwrap();
    assert_eq!((code, out.trim()), (0, "box.example"));
    let (_, link, _) =
        output(&mut lab.netpath(&["exec", "s1", "--", "ip", "-o", "link", "show", "eth0"]).unwrap()).unwrap();
    assert!(link.contains("mtu 1450") && link.contains("02:11:22:33:44:55"), "{link}");
    let (_, addr, _) =
        output(&mut lab.netpath(&["exec", "s1", "--", "ip", "-o", "-4", "addr", "show", "eth0"]).unwrap()).unwrap();
    assert!(addr.contains("10.32.0.2/24"), "{addr}");
    let (_, route, _) =
        output(&mut lab.netpath(&["exec", "s1", "--", "ip", "route", "show", "default"]).unwrap()).unwrap();
    assert!(route.contains("via 10.32.0.1"), "{route}");

    // The command's exit code passes through, and --rm removes the sandbox.
    let (code, ..) = output(
        &mut lab.netpath(&["run", "--rm", "--name", "t", "--network", "n1", "--", "sh", "-c", "exit 7"]).unwrap(),
    )
    .unwrap();
    assert_eq!(code, 7);
    let (code, ..) = output(&mut lab.netpath(&["exec", "s1", "--", "false"]).unwrap()).unwrap();
    assert_eq!(code, 1);
    let ps = lab.netpath_ok(&["ps"]).unwrap();
    assert!(ps.contains("s1") && !ps.contains(" t "), "{ps}");

    let inspect: serde_json::Value =
        serde_json::from_str(&lab.netpath_ok(&["network", "inspect", "n1"]).unwrap()).unwrap();
    let members: Vec<_> = inspect[0]["Containers"].as_object().unwrap().values().collect();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["Name"], "s1");
    assert_eq!(members[0]["IPv4Address"], "10.32.0.2/24");
    assert!(inspect[0]["IPAM"]["Config"][0]["Gateway"].is_null(), "as Docker: --subnet alone shows no gateway");

    // A detached command runs until rm -f, which plain rm refuses.
    lab.netpath_ok(&["run", "-d", "--name", "svc", "--network", "n1", "--", "sleep", "600"]).unwrap();
    let (code, _, err) = output(&mut lab.netpath(&["rm", "svc"]).unwrap()).unwrap();
    assert_ne!(code, 0, "{err}");
    lab.netpath_ok(&["rm", "-f", "svc"]).unwrap();
}

#[test]
fn default_network_follows_daemon_json() {
    let lab = lab("config");
    lab.configure(r#"{"bip": "192.168.10.1/24", "mtu": 1400, "bridge": "np-test0"}"#).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "s1"]).unwrap();
    let bridge = host_out(&lab, &["ip", "-o", "-4", "addr", "show", "np-test0"]);
    assert!(bridge.contains("192.168.10.1/24"), "{bridge}");
    let mtu = host_out(&lab, &["ip", "-o", "link", "show", "np-test0"]);
    assert!(mtu.contains("mtu 1400"), "{mtu}");
    let (_, eth0, _) =
        output(&mut lab.netpath(&["exec", "s1", "--", "ip", "-o", "addr", "show", "eth0"]).unwrap()).unwrap();
    assert!(eth0.contains("192.168.10.2/24"), "{eth0}");
    let (_, link, _) =
        output(&mut lab.netpath(&["exec", "s1", "--", "ip", "-o", "link", "show", "eth0"]).unwrap()).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    let (code, out, _) =
        output(lab.sandbox_cmd("s1", "ping").unwrap().args(["-c", "1", "-W", "2", "192.168.10.1"])).unwrap();
    assert_eq!(code, 0, "the gateway answers: {out}");
}

#[test]
fn every_map_dumps_with_field_names() {
    let lab = lab("bpftool");
    lab.netpath_ok(&["run", "-d", "--name", "s1"]).unwrap();
    let maps = lab.datapath().maps_dir();
    for (map, fields) in [
        ("ENDPOINTS", &["\"ipv4\"", "\"host_ifindex\"", "\"network_id\"", "\"mac\""][..]),
        ("STATS", &["\"packets\"", "\"bytes\""][..]),
        ("VETHS", &["\"host_ifindex\"", "\"ipv4\""][..]),
    ] {
        let dump =
            output(std::process::Command::new("bpftool").args(["map", "dump", "pinned"]).arg(maps.join(map))).unwrap();
        assert_eq!(dump.0, 0, "{}", dump.2);
        for f in fields {
            assert!(dump.1.contains(f), "{map} dump lacks {f}: {}", dump.1);
        }
    }
    let listed: Vec<_> = std::fs::read_dir(&maps).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(listed.len(), netpath_common::map_layout::ALL.len(), "every pinned map is covered: {listed:?}");
}

#[test]
fn removing_everything_leaves_nothing_and_no_firewall_rules_ever() {
    let lab = lab("teardown");
    let links_before = {
        let mut l = lab.in_host(|r| r.link_names()).unwrap();
        l.sort();
        l
    };
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.33.0.0/24"]).unwrap();
    lab.netpath_ok(&["network", "create", "n2"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "b", "--network", "n2", "--", "sleep", "600"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "c"]).unwrap();
    let (code, ..) = output(lab.sandbox_cmd("a", "ping").unwrap().args(["-c", "1", "-W", "2", "10.33.0.1"])).unwrap();
    assert_eq!(code, 0);
    assert_no_firewall_rules(&lab);

    lab.netpath_ok(&["rm", "-f", "a", "b", "c"]).unwrap();
    lab.netpath_ok(&["network", "rm", "n1", "n2"]).unwrap();
    assert!(!lab.in_host(|r| r.link_names()).unwrap().iter().any(|l| l.starts_with("veth")));
    lab.netpath_ok(&["system", "reset"]).unwrap();

    let mut links_after = lab.in_host(|r| r.link_names()).unwrap();
    links_after.sort();
    assert_eq!(links_after, links_before, "no leftover links");
    assert!(!lab.roots.bpf.exists(), "no leftover pins");
    let ns_files: Vec<_> = std::fs::read_dir(lab.roots.netns_dir()).into_iter().flatten().flatten().collect();
    assert!(ns_files.is_empty(), "no leftover namespace files: {ns_files:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(lab.roots.run.to_str().unwrap()), "no leftover mounts");
    assert_eq!(lab.netpath_ok(&["ps"]).unwrap().lines().count(), 1);
    assert_no_firewall_rules(&lab);
}
