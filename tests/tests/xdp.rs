//! XDP in front of TC on the uplink (`"uplink-xdp"` in daemon.json): TCP
//! and UDP of published ports and the replies of masqueraded connections
//! are translated and redirected by XDP, checked at the receiver; what XDP
//! leaves alone (ICMP here) still goes through the TC programs.
use netpath_common::{Counters, Program, Reason};
use netpath_tests::{At, Lab, lab, output, probe, tcp_check, transfer};

fn counters(lab: &Lab, p: Program) -> Counters {
    lab.datapath().counters(p).unwrap()
}

#[test]
fn uplink_xdp_carries_published_and_masqueraded_flows() {
    let lab = lab("xdp");
    lab.configure(r#"{"uplink-xdp":"native"}"#).unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.46.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "web", "--network", "n1", "-p", "8080:80", "-p", "5353:53/udp"]).unwrap();
    let stats = lab.netpath_ok(&["stats"]).unwrap();
    assert!(stats.contains("xdp_from_uplink"), "{stats}");
    let (xdp0, tc0) = (counters(&lab, Program::XdpFromUplink), counters(&lab, Program::FromUplink));

    let (r, s) = tcp_check(&lab, At::Sandbox("web"), 80, At::Outside, "198.18.0.2:8080", 1 << 20).unwrap();
    assert_eq!(r["peer"], s["local"], "the sandbox sees the real client");
    let (r, s) = transfer(
        probe(&lab, At::Sandbox("web"), &["udp-sink", "--port", "53", "--count", "50"]),
        probe(&lab, At::Outside, &["udp-send", "--to", "198.18.0.2:5353", "--count", "50"]),
    )
    .unwrap();
    assert_eq!(r["datagrams"], 50);
    assert_eq!(r["peers"], serde_json::json!([s["local"]]), "the sandbox sees the real client");
    // Frames as a NIC hands them over (no socket buffer behind them).
    let (r, s) = transfer(
        probe(&lab, At::Sandbox("web"), &["udp-sink", "--port", "53", "--count", "201", "--timeout", "5"]),
        probe(&lab, At::Outside, &["wire-send", "--to", "198.18.0.2:5353", "--sport", "40000", "--count", "200"]),
    )
    .unwrap();
    // One more: the ordinary datagram that resolved the neighbour first.
    assert_eq!((&r["datagrams"], &s["frames"]), (&serde_json::json!(201), &serde_json::json!(200)), "{r}");
    assert!(r["peers"].as_array().unwrap().contains(&serde_json::json!("198.18.0.1:40000")), "{r}");
    // Masquerade: the outside's ACKs and replies come back through XDP.
    let (r, _) = tcp_check(&lab, At::Outside, 7000, At::Sandbox("web"), "198.18.0.1:7000", 1 << 20).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.2:"), "{r}");
    let xdp1 = counters(&lab, Program::XdpFromUplink);
    let (new, nat) = (Reason::DnatNew, Reason::Nat);
    assert!(xdp1.packets(new) >= xdp0.packets(new) + 2, "XDP opened the published TCP and UDP connections");
    let translated = |c: &Counters| c.packets(new) + c.packets(nat);
    assert!(translated(&xdp1) >= translated(&xdp0) + 50 + 200 + 20, "{xdp0:?} -> {xdp1:?}");
    assert_eq!(counters(&lab, Program::FromUplink).packets(new), tc0.packets(new), "TC had nothing left to open");

    // ICMP is TC's: echo replies of a masqueraded ping pass XDP untouched.
    let mut ping = lab.sandbox_cmd("web", "ping").unwrap();
    assert_eq!(output(ping.args(["-c", "2", "-i", "0.2", "-W", "1", "198.18.0.1"])).unwrap().0, 0);
    let (xdp2, tc2) = (counters(&lab, Program::XdpFromUplink), counters(&lab, Program::FromUplink));
    assert!(xdp2.packets(Reason::PassToTc) >= xdp1.packets(Reason::PassToTc) + 2);
    assert!(tc2.packets(nat) >= tc0.packets(nat) + 2, "TC translated the echo replies");
}
