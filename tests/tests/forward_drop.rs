//! A host whose netfilter FORWARD policy is DROP (what dockerd sets on
//! every Docker host), with no rule of netpath's anywhere: sandbox traffic
//! for the outside leaves by the data path's own redirect to the uplink
//! (`REDIRECT_UPLINK`), never through the FORWARD hook, so masquerade and
//! published ports work; what the data path leaves to the kernel (a packet
//! too big for the route) still gets the kernel's path-MTU answer, which is
//! sent before the FORWARD hook.
use netpath_common::{Program, Reason};
use netpath_tests::{At, Lab, ip_in, lab, output, probe, tcp_check, transfer};

const OUTSIDE: &str = "198.18.0.1";

fn packets(lab: &Lab, p: Program, r: Reason) -> u64 {
    lab.datapath().counters(p).unwrap().packets(r)
}

/// `iptables` in the lab's host namespace; its stdout.
fn iptables(lab: &Lab, args: &[&str]) -> String {
    let (code, out, err) = output(lab.host_cmd("iptables").unwrap().arg("-w").args(args)).unwrap();
    assert_eq!(code, 0, "iptables {args:?}: {err}");
    out
}

/// (policy, packets the policy dropped) of the host's FORWARD chain.
fn forward_policy(lab: &Lab) -> (String, u64) {
    let listing = iptables(lab, &["-L", "FORWARD", "-n", "-v", "-x"]);
    // "Chain FORWARD (policy DROP 0 packets, 0 bytes)"
    let head: Vec<&str> = listing.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(head.get(..3), Some(&["Chain", "FORWARD", "(policy"][..]), "{listing}");
    (head[3].to_string(), head[4].parse().unwrap_or_else(|_| panic!("{listing}")))
}

fn ping_df(lab: &Lab, size: u32, dst: &str) -> String {
    let s = size.to_string();
    let (_, out, err) =
        output(lab.sandbox_cmd("a", "ping").unwrap().args(["-M", "do", "-s", &s, "-c", "2", "-W", "1", dst])).unwrap();
    out + &err
}

#[test]
fn sandbox_egress_bypasses_a_dropping_forward_chain() {
    let lab = lab("fwddrop");
    iptables(&lab, &["-P", "FORWARD", "DROP"]);
    assert_eq!(forward_policy(&lab), ("DROP".to_string(), 0));
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.46.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1", "--ip", "10.46.0.10"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "web", "--network", "n1", "--ip", "10.46.0.20", "-p", "8080:80"]).unwrap();
    let redirected = packets(&lab, Program::FromContainer, Reason::RedirectUplink);

    // Masquerade, TCP: the payload arrives whole, from the uplink's address.
    let (r, s) = tcp_check(&lab, At::Outside, 7000, At::Sandbox("a"), "198.18.0.1:7000", 1 << 20).unwrap();
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.2:"), "masqueraded: {r}");
    assert!(s["local"].as_str().unwrap().starts_with("10.46.0.10:"), "{s}");
    // UDP: every datagram, from the uplink's address. The host forgets the
    // outside's MAC first: the first datagrams find no neighbour, and
    // bpf_redirect_neigh resolves it (queueing them meanwhile).
    ip_in(&lab.host_ns, &["neigh", "flush", "dev", netpath_lab::fixture::HOST_UPLINK]).unwrap();
    let neighbours = ip_in(&lab.host_ns, &["neigh", "show", "dev", netpath_lab::fixture::HOST_UPLINK]).unwrap();
    assert!(!neighbours.contains("lladdr"), "no neighbour known: {neighbours}");
    let (r, s) = transfer(
        probe(&lab, At::Outside, &["udp-sink", "--port", "7001", "--count", "50"]),
        probe(&lab, At::Sandbox("a"), &["udp-send", "--to", "198.18.0.1:7001", "--count", "50"]),
    )
    .unwrap();
    assert_eq!(r["datagrams"], 50, "{r} / {s}");
    let peers = r["peers"].as_array().unwrap();
    assert!(peers.len() == 1 && peers[0].as_str().unwrap().starts_with("198.18.0.2:"), "{r}");

    // A published port from outside: the sandbox sees the real client and
    // its replies (which leave by the same redirect) complete the transfer.
    let (r, s) = tcp_check(&lab, At::Sandbox("web"), 80, At::Outside, "198.18.0.2:8080", 1 << 20).unwrap();
    assert_eq!(r["peer"], s["local"], "the sandbox sees the real client: {r} / {s}");
    assert!(r["peer"].as_str().unwrap().starts_with("198.18.0.1:"), "{r}");

    let now = packets(&lab, Program::FromContainer, Reason::RedirectUplink);
    assert!(now >= redirected + 50 + 2, "sandbox egress counted as REDIRECT_UPLINK ({redirected} -> {now})");
    assert!(packets(&lab, Program::ToUplink, Reason::SnatNew) >= 2, "translated on the uplink's egress");

    // Path MTU, the router's answer: a far host behind a 1000-byte link.
    let far = lab.add_far_host(1000).unwrap().to_string();
    let out = ping_df(&lab, 1300, &far);
    assert!(out.contains("mtu = 1000") || out.contains("mtu=1000"), "told the far link's MTU: {out}");
    // ... and the host's own: the uplink's MTU below the sandbox's. The
    // data path leaves the packet to the kernel, whose forwarding answers
    // before its FORWARD hook.
    ip_in(&lab.host_ns, &["link", "set", netpath_lab::fixture::HOST_UPLINK, "mtu", "1400"]).unwrap();
    let fallback = packets(&lab, Program::FromContainer, Reason::PassRouted);
    let out = ping_df(&lab, 1400, OUTSIDE);
    assert!(out.contains("mtu = 1400") || out.contains("mtu=1400"), "told the uplink's MTU: {out}");
    assert!(packets(&lab, Program::FromContainer, Reason::PassRouted) > fallback, "left to the kernel");
    let out = ping_df(&lab, 1400 - 28, OUTSIDE);
    assert!(out.contains(" 0% packet loss"), "the largest packet that fits still goes: {out}");

    // Nothing of all that met the FORWARD chain's policy.
    assert_eq!(forward_policy(&lab), ("DROP".to_string(), 0));
    let rules = iptables(&lab, &["-S", "FORWARD"]);
    assert_eq!(rules.trim(), "-P FORWARD DROP", "no rule was added: {rules}");
}
