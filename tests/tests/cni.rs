//! `netpath-cni` driven as libcni drives it (CNI_* variables, configuration
//! on stdin, answer on stdout): ADD, CHECK, DEL, DEL again, VERSION,
//! STATUS, GC, with the results checked field by field against the spec's
//! shapes; the added namespaces reach each other (by address and by the
//! names the `aliases` capability and CNI_ARGS gave), the outside, and their
//! published ports from the outside with the client's real address seen.
//! Bad configuration or environment is a CNI error object with the spec's
//! code that changes nothing.
use std::io::Write;
use std::process::Stdio;

use netpath_tests::{
    At, Lab, datapath_entries, foreign::ForeignNs, lab, output, probe, sandboxes, send_line, sink_line, tcp_pair, words,
};
use serde_json::{Value, json};

/// The plugin next to the netpath binary under test.
fn plugin(lab: &Lab) -> std::path::PathBuf {
    lab.netpath_bin.with_file_name("netpath-cni")
}

struct Call<'a> {
    command: &'a str,
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
}

impl<'a> Call<'a> {
    fn new(command: &'a str, container_id: &'a str, netns: &'a str) -> Self {
        Call { command, container_id, netns, ifname: "eth0", args: "" }
    }
}

/// Runs the plugin in the lab host as a runtime would: (exit code, stdout).
fn cni(lab: &Lab, call: &Call, stdin: &str) -> (i32, String) {
    let mut cmd = lab.host_cmd(plugin(lab)).unwrap();
    for (k, v) in lab.roots.env() {
        cmd.env(k, v);
    }
    cmd.env("CNI_COMMAND", call.command).env("CNI_PATH", "/nonexistent");
    for (k, v) in [("CNI_CONTAINERID", call.container_id), ("CNI_IFNAME", call.ifname), ("CNI_ARGS", call.args)] {
        if !v.is_empty() {
            cmd.env(k, v);
        }
    }
    // containerd's DEL sends CNI_NETNS empty rather than unset.
    cmd.env("CNI_NETNS", call.netns);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ok(lab: &Lab, call: &Call, conf: &Value) -> String {
    let (code, out) = cni(lab, call, &conf.to_string());
    assert_eq!(code, 0, "{} failed: {out}", call.command);
    out
}

/// A failing call's error object, checked for the spec's shape.
fn error(lab: &Lab, call: &Call, stdin: &str) -> Value {
    let (code, out) = cni(lab, call, stdin);
    assert_ne!(code, 0, "{} succeeded: {out}", call.command);
    let e: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("not a CNI error object: {out:?}"));
    assert!(e["cniVersion"].is_string() && e["code"].is_u64() && e["msg"].is_string(), "{e}");
    e
}

fn conflist_entry(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "cn1",
        "type": "netpath",
        "subnet": "10.64.0.0/24",
        "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
    })
}

fn with_runtime(mut conf: Value, runtime: Value) -> Value {
    conf["runtimeConfig"] = runtime;
    conf
}

/// `lab dig NAME` from inside `ns` at the network's resolver.
fn resolve(lab: &Lab, ns: &ForeignNs, name: &str) -> Vec<String> {
    let (code, out, err) =
        output(&mut ns.probe(lab, &words(&format!("dig --name {name} --server 10.64.0.1")))).unwrap();
    assert_eq!(code, 0, "dig {name}: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["answers"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn host_links(lab: &Lab) -> Vec<String> {
    let mut l = lab.in_host(|r| r.link_names()).unwrap();
    l.sort();
    l
}

#[test]
fn add_check_del_status_gc_as_libcni_calls_them() {
    let lab = lab("cni");
    let c1 = ForeignNs::add(&lab, "c1").unwrap();
    let c2 = ForeignNs::add(&lab, "c2").unwrap();
    let (ns1, ns2) = (c1.path.to_str().unwrap(), c2.path.to_str().unwrap());
    let (id1, id2) = ("c1c1c1c1c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2c2c2c2c2");
    let links_before = host_links(&lab);

    // VERSION needs nothing but the version.
    let v: Value =
        serde_json::from_str(&ok(&lab, &Call::new("VERSION", "", ""), &json!({"cniVersion": "1.1.0"}))).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    let supported: Vec<&str> = v["supportedVersions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(supported.contains(&"1.0.0") && supported.contains(&"1.1.0"), "{v}");

    // STATUS before anything exists: ready.
    assert_eq!(ok(&lab, &Call::new("STATUS", "", ""), &conflist_entry("1.1.0")), "");

    // ADD creates the network on first use; the result in the spec's shape.
    let conf1 = with_runtime(
        conflist_entry("1.1.0"),
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "aliases": {"cn1": ["web"]}}),
    );
    let r1: Value = serde_json::from_str(&ok(&lab, &Call::new("ADD", id1, ns1), &conf1)).unwrap();
    let net: Value = serde_json::from_str(&lab.netpath_ok(&["network", "inspect", "cn1"]).unwrap()).unwrap();
    assert_eq!(net[0]["IPAM"]["Config"][0]["Subnet"], "10.64.0.0/24", "the first ADD made the network");
    assert_eq!(r1["cniVersion"], "1.1.0");
    let ifs = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{r1}");
    let host_veth = ifs[0]["name"].as_str().unwrap().to_string();
    assert!(host_links(&lab).contains(&host_veth), "interfaces[0] is the host side: {r1}");
    assert!(ifs[0].get("sandbox").is_none(), "{r1}");
    assert_eq!(ifs[0]["mac"].as_str().unwrap().len(), 17);
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["mac"], "02:42:0a:40:00:02");
    assert_eq!(ifs[1]["sandbox"], ns1);
    assert_eq!(r1["ips"], json!([{"address": "10.64.0.2/24", "gateway": "10.64.0.1", "interface": 1}]));
    assert_eq!(r1["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.64.0.1"}]));
    assert_eq!(r1["dns"]["nameservers"], json!(["10.64.0.1"]), "netpath's resolver serves the aliases");
    let inside = output(c1.cmd("ip").unwrap().args(["-o", "-4", "addr", "show", "eth0"])).unwrap().1;
    assert!(inside.contains("10.64.0.2/24"), "the result says what is there: {inside}");

    // A second container as Podman (IP= and K8S_POD_NAME in CNI_ARGS) and
    // containerd (capitalised portMappings keys) pass them.
    let conf2 = with_runtime(
        conflist_entry("1.0.0"),
        json!({"portMappings": [{"HostPort": 9090, "ContainerPort": 90, "Protocol": "tcp", "HostIP": ""}]}),
    );
    let call2 = Call {
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=podman;K8S_POD_NAME=second;IP=10.64.0.50",
        ..Call::new("ADD", id2, ns2)
    };
    let r2: Value = serde_json::from_str(&ok(&lab, &call2, &conf2)).unwrap();
    assert_eq!(r2["cniVersion"], "1.0.0");
    assert_eq!(r2["ips"][0]["address"], "10.64.0.50/24");

    // Real packets: peer by address and by name, the outside, published ports.
    assert_eq!(resolve(&lab, &c2, "web"), ["10.64.0.2"]);
    assert_eq!(resolve(&lab, &c1, "second"), ["10.64.0.50"]);
    let (r, _) =
        tcp_pair(c1.probe(&lab, &words(&sink_line(7200))), c2.probe(&lab, &words(&send_line("10.64.0.2:7200"))));
    assert!(r["peer"].as_str().unwrap().starts_with("10.64.0.50:"), "{r}");
    let (r, _) = tcp_pair(
        probe(&lab, At::Outside, &words(&sink_line(7201))),
        c1.probe(&lab, &words(&send_line("198.18.0.1:7201"))),
    );
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.2:"), "masqueraded: {r}");
    for (ns, port, host_port) in [(&c1, 80, 8080), (&c2, 90, 9090)] {
        let (r, s) = tcp_pair(
            ns.probe(&lab, &words(&sink_line(port))),
            probe(&lab, At::Outside, &words(&send_line(&format!("198.18.0.2:{host_port}")))),
        );
        assert_eq!(r["peer"], s["local"], "the container sees the real client");
        assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.1:"), "{r}");
    }

    // CHECK against the cached result; a result that disagrees fails with a
    // plugin code.
    let mut check = conflist_entry("1.1.0");
    check["prevResult"] = r1.clone();
    assert_eq!(ok(&lab, &Call::new("CHECK", id1, ns1), &check), "");
    check["prevResult"]["ips"][0]["address"] = json!("10.64.0.9/24");
    let e = error(&lab, &Call::new("CHECK", id1, ns1), &check.to_string());
    assert!(e["code"].as_u64().unwrap() >= 100, "{e}");
    let e = error(&lab, &Call::new("CHECK", "nosuchcontainer", ns1), &conflist_entry("1.1.0").to_string());
    assert!(e["code"].as_u64().unwrap() >= 100, "{e}");

    // GC keeps what the runtime lists and removes the rest of this network's.
    let mut gc = conflist_entry("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": id1, "ifname": "eth0"}]);
    assert_eq!(ok(&lab, &Call::new("GC", "", ""), &gc), "");
    let names: Vec<String> = sandboxes(&lab).unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, [netpath::cni::record_name(id1, "eth0")], "GC removed the unlisted attachment only");
    assert_eq!(c2.links().unwrap(), ["lo"]);
    assert_eq!(datapath_entries(&lab, [10, 64, 0, 50]), 0);

    // DEL with the cached result, then DEL again and as containerd sends it
    // (empty CNI_NETNS): all succeed, nothing is left, the namespace lives.
    let mut del = conflist_entry("1.1.0");
    del["prevResult"] = r1;
    assert_eq!(datapath_entries(&lab, [10, 64, 0, 2]), 2, "endpoint and published port before DEL");
    assert_eq!(ok(&lab, &Call::new("DEL", id1, ns1), &del), "");
    assert_eq!(ok(&lab, &Call::new("DEL", id1, ns1), &del), "");
    assert_eq!(ok(&lab, &Call::new("DEL", id1, ""), &del), "");
    assert_eq!(ok(&lab, &Call::new("DEL", id2, ""), &conflist_entry("1.0.0")), "");
    assert!(sandboxes(&lab).unwrap().is_empty());
    assert_eq!(datapath_entries(&lab, [10, 64, 0, 2]), 0);
    assert_eq!(c1.links().unwrap(), ["lo"]);
    assert!(c1.is_live() && c2.is_live(), "the engine's namespaces stay");
    let mut left = host_links(&lab);
    // The network stays (as a conflist does), and so does the default
    // network, which comes into being with the first attachment, as on `run`.
    let bridges: Vec<String> = ["cn1", "bridge"]
        .iter()
        .map(|n| {
            let v: Value = serde_json::from_str(&lab.netpath_ok(&["network", "inspect", n]).unwrap()).unwrap();
            v[0]["Bridge"].as_str().unwrap().to_string()
        })
        .collect();
    left.retain(|l| !bridges.contains(l));
    assert_eq!(left, links_before, "only the networks' bridges remain");
    // A DEL after the namespace itself is gone (ADD, then the engine removes it).
    let c3 = ForeignNs::add(&lab, "c3").unwrap();
    ok(&lab, &Call::new("ADD", "c3c3c3c3c3c3c3", c3.path.to_str().unwrap()), &conflist_entry("1.1.0"));
    drop(c3);
    assert_eq!(ok(&lab, &Call::new("DEL", "c3c3c3c3c3c3c3", ""), &conflist_entry("1.1.0")), "");
    assert!(sandboxes(&lab).unwrap().is_empty());
    assert_eq!(host_links(&lab).len(), links_before.len() + 2, "its host veth went with it");
}

#[test]
fn bad_configuration_or_environment_is_a_cni_error_that_changes_nothing() {
    let lab = lab("cni-bad");
    let c1 = ForeignNs::add(&lab, "c1").unwrap();
    let ns1 = c1.path.to_str().unwrap().to_string();
    let good = conflist_entry("1.1.0");
    let id = "badbadbadbadbad1";
    let missing = format!("/run/netns/{}-missing", lab.id);
    let mut bad_subnet = good.clone();
    bad_subnet["subnet"] = json!("10.64.0.0/33");
    let mut wrong_type = good.clone();
    wrong_type["type"] = json!("bridge");
    let mut no_version = good.clone();
    no_version.as_object_mut().unwrap().remove("cniVersion");
    let bad_mac = with_runtime(good.clone(), json!({"mac": "zz:zz"}));
    let bad_port = with_runtime(good.clone(), json!({"portMappings": [{"hostPort": 8080, "containerPort": 0}]}));
    let cases: Vec<(Call, String, u64)> = vec![
        (Call::new("ADD", id, &ns1), "{not json".into(), 6),
        (Call::new("ADD", id, &ns1), conflist_entry("9.9.9").to_string(), 1),
        (Call::new("ADD", id, &ns1), no_version.to_string(), 7),
        (Call::new("ADD", id, &ns1), wrong_type.to_string(), 7),
        (Call::new("ADD", id, &ns1), bad_subnet.to_string(), 7),
        (Call::new("ADD", id, &ns1), bad_mac.to_string(), 7),
        (Call::new("ADD", id, &ns1), bad_port.to_string(), 7),
        (Call::new("ADD", id, ""), good.to_string(), 4),
        (Call::new("ADD", id, &missing), good.to_string(), 4),
        (Call::new("ADD", "bad/id", &ns1), good.to_string(), 4),
        (Call { ifname: "", ..Call::new("ADD", id, &ns1) }, good.to_string(), 4),
        (Call::new("FROB", id, &ns1), good.to_string(), 4),
        (Call::new("", id, &ns1), good.to_string(), 4),
        (Call::new("STATUS", "", ""), conflist_entry("1.0.0").to_string(), 1),
        (Call::new("GC", "", ""), good.to_string(), 7),
        // An address outside the subnet: netpath's own refusal (100+),
        // still before anything is made (not even the network).
        (Call { args: "IP=10.99.0.1", ..Call::new("ADD", id, &ns1) }, good.to_string(), 100),
    ];
    for (call, stdin, want) in cases {
        let e = error(&lab, &call, &stdin);
        assert_eq!(e["code"], want, "{} {stdin}: {e}", call.command);
        assert!(!e["msg"].as_str().unwrap().is_empty());
        assert!(sandboxes(&lab).unwrap().is_empty(), "{e}: a record was made");
        let nets = lab.netpath_ok(&["network", "ls", "--format", "{{.Name}}"]).unwrap();
        assert!(!nets.contains("cn1"), "{e}: the network was made");
        assert_eq!(c1.links().unwrap(), ["lo"], "{e}: the namespace was changed");
    }
    // The error names the variable it is about.
    let e = error(&lab, &Call::new("ADD", id, ""), &good.to_string());
    assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    // An address that is taken: refused with netpath's reason, the first
    // container untouched.
    ok(&lab, &Call::new("ADD", "first0000000", &ns1), &good);
    let c2 = ForeignNs::add(&lab, "c2").unwrap();
    let e = error(
        &lab,
        &Call { args: "IP=10.64.0.2", ..Call::new("ADD", id, c2.path.to_str().unwrap()) },
        &good.to_string(),
    );
    assert!(e["code"].as_u64().unwrap() >= 100 && e["details"].as_str().unwrap().contains("10.64.0.2"), "{e}");
    assert_eq!(c2.links().unwrap(), ["lo"]);
    assert_eq!(sandboxes(&lab).unwrap().len(), 1);
    // ADD of an attachment that exists already.
    let e = error(&lab, &Call::new("ADD", "first0000000", &ns1), &good.to_string());
    assert!(e["code"].as_u64().unwrap() >= 100, "{e}");
    // Results in pre-1.0 shapes name the IP version.
    let c3 = ForeignNs::add(&lab, "c3").unwrap();
    let old: Value = serde_json::from_str(&ok(
        &lab,
        &Call::new("ADD", "old000000000", c3.path.to_str().unwrap()),
        &conflist_entry("0.4.0"),
    ))
    .unwrap();
    assert_eq!(old["cniVersion"], "0.4.0");
    assert_eq!(old["ips"][0]["version"], "4");
}
