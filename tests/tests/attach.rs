//! Bring your own namespace: `network attach` wires a namespace made with
//! `ip netns add` exactly as `run` would (peer by address and by name, the
//! outside through masquerade, a published port with the client's real
//! address), `network detach` leaves nothing of netpath's and the namespace
//! itself, and bad input is one line that changes nothing.
use netpath_tests::{
    At, Lab, foreign::ForeignNs, lab, output, probe, sandboxes, send_line, sink_line, tcp_pair, words,
};
use serde_json::Value;

const GATEWAY: &str = "10.61.0.1";

/// `lab dig NAME` from sandbox `from` at the network's resolver.
fn resolve(lab: &Lab, from: &str, name: &str) -> Vec<String> {
    let args = format!("dig --name {name} --server {GATEWAY}");
    let (code, out, err) = output(&mut probe(lab, At::Sandbox(from), &words(&args))).unwrap();
    assert_eq!(code, 0, "dig {name}: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["answers"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn record<'a>(all: &'a [Value], name: &str) -> Option<&'a Value> {
    all.iter().find(|s| s["name"] == name)
}

/// Whether the data path holds anything for `ip` (endpoint, published port
/// target) or a pinned program link for `host_ifname`.
fn datapath_holds(lab: &Lab, ip: [u8; 4], host_ifname: &str) -> Vec<String> {
    let dp = lab.datapath();
    let mut found = Vec::new();
    if dp.endpoints().unwrap().get(&netpath_common::EndpointKey { ipv4: ip }, 0).is_ok() {
        found.push("endpoint".to_string());
    }
    for (k, t) in dp.published().unwrap().iter().flatten() {
        if t.addr == ip {
            found.push(format!("published port {}", u16::from_be(k.host_port)));
        }
    }
    let links = lab.roots.bpf.join("links");
    for pin in std::fs::read_dir(&links).into_iter().flatten().flatten() {
        if pin.file_name().to_string_lossy().starts_with(&format!("{host_ifname}@")) {
            found.push(format!("link pin {}", pin.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn an_attached_namespace_works_as_run_and_detach_leaves_nothing() {
    let lab = lab("attach");
    let app = ForeignNs::add(&lab, "app").unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.61.0.0/24"]).unwrap();
    let netns = app.path.to_str().unwrap().to_string();
    let id = lab
        .netpath_ok(&["network", "attach", "n1", "--netns", &netns, "--name", "app", "--alias", "web", "-p", "8080:80"])
        .unwrap();
    assert_eq!(id.trim().len(), 64, "prints the record's ID: {id}");
    lab.netpath_ok(&["run", "-d", "--name", "peer", "--network", "n1"]).unwrap();

    let all = sandboxes(&lab).unwrap();
    let rec = record(&all, "app").expect("the attachment is a sandbox record");
    assert_eq!(rec["mode"]["external"]["owner"], "attach", "{rec}");
    assert_eq!(rec["attachments"][0]["ip"], "10.61.0.2");
    assert_eq!(rec["attachments"][0]["ifname"], "eth0");
    let host_ifname = rec["attachments"][0]["host_ifname"].as_str().unwrap().to_string();
    let inside = output(app.cmd("ip").unwrap().args(["-o", "-4", "addr", "show", "eth0"])).unwrap().1;
    assert!(inside.contains("10.61.0.2/24"), "{inside}");
    let route = output(app.cmd("ip").unwrap().args(["route", "show", "default"])).unwrap().1;
    assert!(route.contains(&format!("via {GATEWAY}")), "{route}");

    // The peer reaches it by address, and by its name and alias through
    // netpath's resolver.
    assert_eq!(resolve(&lab, "peer", "app"), ["10.61.0.2"]);
    assert_eq!(resolve(&lab, "peer", "web"), ["10.61.0.2"]);
    let (r, s) = tcp_pair(
        app.probe(&lab, &words(&sink_line(7100))),
        probe(&lab, At::Sandbox("peer"), &words(&send_line("10.61.0.2:7100"))),
    );
    assert_eq!(r["peer"], s["local"]);
    assert!(r["peer"].as_str().unwrap().starts_with("10.61.0.3:"), "{r}");
    // And the attached namespace reaches the peer and the outside (masqueraded).
    tcp_pair(
        probe(&lab, At::Sandbox("peer"), &words(&sink_line(7101))),
        app.probe(&lab, &words(&send_line("10.61.0.3:7101"))),
    );
    let (r, _) = tcp_pair(
        probe(&lab, At::Outside, &words(&sink_line(7102))),
        app.probe(&lab, &words(&send_line("198.18.0.1:7102"))),
    );
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.2:"), "masqueraded: {r}");
    // Its published port, from the outside, with the client's address seen.
    let (r, s) = tcp_pair(
        app.probe(&lab, &words(&sink_line(80))),
        probe(&lab, At::Outside, &words(&send_line("198.18.0.2:8080"))),
    );
    assert_eq!(r["peer"], s["local"], "the attached namespace sees the real client");
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.1:"), "{r}");
    let ports = lab.netpath_ok(&["port", "app"]).unwrap();
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");

    // Detach: nothing of netpath's is left, the namespace is.
    assert!(!datapath_holds(&lab, [10, 61, 0, 2], &host_ifname).is_empty(), "entries exist before detach");
    lab.netpath_ok(&["network", "detach", "n1", "app"]).unwrap();
    assert!(record(&sandboxes(&lab).unwrap(), "app").is_none());
    assert_eq!(datapath_holds(&lab, [10, 61, 0, 2], &host_ifname), Vec::<String>::new());
    assert!(!lab.in_host(|r| r.link_names()).unwrap().contains(&host_ifname), "host veth gone");
    assert!(app.is_live(), "the namespace survives detach");
    assert_eq!(app.links().unwrap(), ["lo"], "only its own loopback is left inside");
    assert_eq!(resolve(&lab, "peer", "app"), Vec::<String>::new(), "the name is gone from the resolver");

    // It can be attached again, and then by the PID of a process inside it;
    // `rm -f` unwires it the same way.
    lab.netpath_ok(&["network", "attach", "n1", "--netns", &netns]).unwrap();
    let all = sandboxes(&lab).unwrap();
    let again = record(&all, &app.name).expect("default name: the namespace file's");
    assert_eq!(again["attachments"][0]["ip"], "10.61.0.2", "the freed address is reused");
    let mut sleeper = app.cmd("sleep").unwrap().arg("60").spawn().unwrap();
    lab.netpath_ok(&["network", "create", "n2", "--subnet", "10.62.0.0/24"]).unwrap();
    let pid = sleeper.id().to_string();
    lab.netpath_ok(&["network", "attach", "n2", "--netns", &pid, "--name", "second"]).unwrap();
    let links = app.links().unwrap();
    assert!(links.contains(&"eth0".to_string()) && links.contains(&"eth1".to_string()), "{links:?}");
    let route = output(app.cmd("ip").unwrap().args(["route", "show", "default"])).unwrap().1;
    assert_eq!(route.lines().count(), 1, "the first network keeps the default route: {route}");
    lab.netpath_ok(&["network", "detach", "n2", "--netns", &pid]).unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    lab.netpath_ok(&["rm", "-f", &app.name]).unwrap();
    assert_eq!(app.links().unwrap(), ["lo"]);
    assert!(app.is_live(), "rm of an attached namespace leaves the namespace");

    // `system reset` unwires it too, and leaves the namespace alone.
    lab.netpath_ok(&["network", "attach", "n1", "--netns", &netns, "-p", "8081:81"]).unwrap();
    lab.netpath_ok(&["system", "reset"]).unwrap();
    assert!(sandboxes(&lab).unwrap().is_empty());
    assert_eq!(app.links().unwrap(), ["lo"]);
    assert!(app.is_live(), "system reset leaves an attached namespace");
}

#[test]
fn bad_attach_input_is_one_line_and_changes_nothing() {
    let lab = lab("attach-bad");
    let app = ForeignNs::add(&lab, "app").unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.63.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "peer", "--network", "n1"]).unwrap();
    let netns = app.path.to_str().unwrap().to_string();
    let before = sandboxes(&lab).unwrap();
    let host_links = lab.in_host(|r| r.link_names()).unwrap();
    let missing = format!("/run/netns/{}-missing", lab.id);
    for (args, says) in [
        (vec!["network", "attach", "n1", "--netns", missing.as_str()], "not found"),
        (vec!["network", "attach", "n1", "--netns", "/etc/hostname"], "not a network namespace"),
        (vec!["network", "attach", "n1", "--netns", "999999999"], "no process"),
        (vec!["network", "attach", "n1", "--netns", netns.as_str(), "--ip", "10.63.0.2"], "already"),
        (vec!["network", "attach", "n1", "--netns", netns.as_str(), "--ip", "10.99.0.2"], "10.99.0.2"),
        (vec!["network", "attach", "n1", "--netns", netns.as_str(), "--name", "peer"], "already in use"),
        (vec!["network", "attach", "nope", "--netns", netns.as_str()], "nope"),
        (vec!["network", "attach", "n1", "--netns", "/proc/self/ns/net"], "host's own namespace"),
    ] {
        let (code, out, err) = output(&mut lab.netpath(&args).unwrap()).unwrap();
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line, not {err:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(sandboxes(&lab).unwrap(), before, "{args:?} changed the records");
        assert_eq!(app.links().unwrap(), ["lo"], "{args:?} changed the namespace");
        assert_eq!(lab.in_host(|r| r.link_names()).unwrap(), host_links, "{args:?} changed the host's links");
    }
    // Detaching what is not attached, or a sandbox run made, is refused too.
    let (code, _, err) = output(&mut lab.netpath(&["network", "detach", "n1", "peer"]).unwrap()).unwrap();
    assert!(code != 0 && err.contains("rm"), "{err}");
    let (code, _, err) = output(&mut lab.netpath(&["network", "detach", "n1", "--netns", &netns]).unwrap()).unwrap();
    assert!(code != 0 && err.contains("no namespace"), "{err}");
    assert_eq!(sandboxes(&lab).unwrap(), before);
}
