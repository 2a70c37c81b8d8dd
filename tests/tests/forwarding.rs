//! Sandbox-to-sandbox traffic on one network goes through the eBPF fast path:
//! checked at the receiver (source address, port, payload hash) and by the
//! destination's host-side veth, whose TX counter must not move.
use netpath::link::LinkCounters;
use netpath_common::{Program, Reason};
use netpath_lab::{Lab, probes};
use netpath_tests::{At, host_ifname, lab, output, probe};
use serde_json::Value;

fn two_sandboxes(lab: &Lab) {
    lab.netpath_ok(&["network", "create", "fast", "--subnet", "10.20.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "fast", "--ip", "10.20.0.10"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "b", "--network", "fast", "--ip", "10.20.0.20"]).unwrap();
}

/// Runs a sink in sandbox `at`, the sender in `from`; returns both reports.
fn transfer(lab: &Lab, at: &str, from: &str, sink: &[&str], send: &[&str]) -> (Value, Value) {
    netpath_tests::transfer(probe(lab, At::Sandbox(at), sink), probe(lab, At::Sandbox(from), send)).unwrap()
}

#[test]
fn icmp_between_sandboxes() {
    let lab = lab("icmp");
    two_sandboxes(&lab);
    let (code, stdout, _) =
        output(lab.sandbox_cmd("a", "ping").unwrap().args(["-c", "3", "-i", "0.2", "-W", "2", "10.20.0.20"])).unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("3 received"), "{stdout}");
    let forwarded = lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::Forwarded);
    assert!(forwarded >= 6, "echo requests and replies take the fast path, counted {forwarded}");
}

#[test]
fn tcp_transfer_skips_the_bridge() {
    let lab = lab("tcp");
    two_sandboxes(&lab);
    // ARP stays the bridge's: resolve the neighbours first and pin them, so
    // that no ARP (not even a reachability probe) crosses the bridge while
    // measuring.
    let (code, ..) = output(lab.sandbox_cmd("a", "ping").unwrap().args(["-c", "1", "-W", "2", "10.20.0.20"])).unwrap();
    assert_eq!(code, 0);
    for (at, peer) in [("a", "10.20.0.20"), ("b", "10.20.0.10")] {
        let (_, shown, _) = output(lab.sandbox_cmd(at, "ip").unwrap().args(["neigh", "show", peer])).unwrap();
        let mac = shown.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).expect("neighbour resolved");
        let pin = ["neigh", "replace", peer, "lladdr", mac, "dev", "eth0", "nud", "permanent"];
        assert_eq!(output(lab.sandbox_cmd(at, "ip").unwrap().args(pin)).unwrap().0, 0);
    }
    let b_veth = host_ifname(&lab, "b").unwrap();
    let tx = |lab: &Lab| -> LinkCounters { lab.in_host(|r| r.counters(&b_veth)).unwrap() };
    let before_link = tx(&lab);
    let before = lab.datapath().counters(Program::FromContainer).unwrap();

    let bytes = 4 * 1024 * 1024;
    let (received, sent) = transfer(
        &lab,
        "b",
        "a",
        &["tcp-sink", "--port", "5001"],
        &["tcp-send", "--to", "10.20.0.20:5001", "--bytes", &bytes.to_string()],
    );

    let after_link = tx(&lab);
    let after = lab.datapath().counters(Program::FromContainer).unwrap();
    assert_eq!(received["bytes"], bytes);
    assert_eq!(received["sha256"], sent["sha256"], "payload arrived intact");
    assert_eq!(received["peer"], sent["local"], "the receiver sees the sender's own address and port");
    assert!(received["peer"].as_str().unwrap().starts_with("10.20.0.10:"));
    assert_eq!(received["local"], "10.20.0.20:5001");
    let forwarded = after.packets(Reason::Forwarded) - before.packets(Reason::Forwarded);
    assert!(forwarded > 100, "bulk transfer forwarded by the program: {forwarded} packets");
    assert!(after.bytes(Reason::Forwarded) - before.bytes(Reason::Forwarded) >= bytes as u64);
    assert_eq!(
        after_link.tx_packets, before_link.tx_packets,
        "destination host veth transmitted nothing: the bridge was skipped"
    );
}

#[test]
fn udp_datagrams_between_sandboxes() {
    let lab = lab("udp");
    two_sandboxes(&lab);
    let before = lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::Forwarded);
    let (received, sent) = transfer(
        &lab,
        "a",
        "b",
        &["udp-sink", "--port", "6000", "--count", "200"],
        &["udp-send", "--to", "10.20.0.10:6000", "--count", "200", "--size", "1200"],
    );
    assert_eq!(received["datagrams"], 200);
    assert_eq!(received["peers"], serde_json::json!([sent["local"]]));
    assert!(sent["local"].as_str().unwrap().starts_with("10.20.0.20:"));
    let one = probes::payload(1200);
    assert_eq!(received["sha256"], sha2_of_repeated(&one, 200));
    let forwarded = lab.datapath().counters(Program::FromContainer).unwrap().packets(Reason::Forwarded) - before;
    assert!(forwarded >= 200, "datagrams took the fast path: {forwarded}");
}

fn sha2_of_repeated(chunk: &[u8], times: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for _ in 0..times {
        h.update(chunk);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
