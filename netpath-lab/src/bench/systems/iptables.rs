//! Docker 20.10's ruleset (`--userland-proxy=false`: DNAT, hairpin
//! MASQUERADE, isolation chains, `route_localnet`) loaded with
//! iptables-restore onto the kernel bridge, in its nft and legacy flavours,
//! scaled to N published ports; docker-proxy (host-local only) runs in the
//! same lab. The evidence is the packet counter of the rule each scenario
//! must hit.
use std::{
    net::Ipv4Addr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{bridge, docker_proxy};
use crate::{
    bench::{
        catalog::{Scenario, System},
        testbed::{Evidence, Place, Procs, Route, Testbed, routes_for, start_servers},
        topology::{FILLER_FIRST, FILLER_IP, IPERF_PORT, PUB_IPERF, PUB_RR, RR_PORT, SERVER_IP},
    },
    fixture::{self, Binaries},
};

/// The bridge with Docker's ruleset of `flavour` (IptablesNft or
/// IptablesLegacy); with host-local wanted, docker-proxy on 127.0.0.1 too.
pub fn testbed(bins: &Binaries, flavour: System, scenarios: &[Scenario], lifetime: Duration) -> Result<Testbed> {
    let bridge::BridgeLab { lab, extra, server, client } = bridge::build("bench-ipt", bins)?;
    let host = Place::ns(&lab.host_ns);
    let outside = Place::ns(&lab.outside_ns);
    load_rules(&host, restore_bin(flavour), 0)?;
    host.run("sysctl", &["-qw", "net.ipv4.conf.docker0.route_localnet=1"])?;
    let routes = routes_for(flavour, &client, (&server, SERVER_IP), &outside, &host, scenarios);
    let mut procs = Procs::default();
    start_servers(&mut procs, &lab.lab_bin, &server, lifetime)?;
    if scenarios.contains(&Scenario::Masquerade) {
        start_servers(&mut procs, &lab.lab_bin, &outside, lifetime)?;
    }
    let mut tb = Testbed::new(flavour, lab, routes, procs)
        .with_evidence(flavour, RuleCounter { host: host.clone(), save: save_bin(flavour) });
    tb.extra = Some(extra);
    if scenarios.contains(&Scenario::HostLocal) && Path::new(docker_proxy::DOCKER_PROXY).exists() {
        docker_proxy::add(&mut tb, &server)?;
    }
    Ok(tb)
}

/// The packet counter of the rule of Docker's ruleset each scenario's
/// connections must hit, from `iptables-save -c`.
struct RuleCounter {
    host: Place,
    save: &'static str,
}

impl Evidence for RuleCounter {
    fn count(&self, scenario: Scenario, _: &Route) -> Result<u64> {
        Ok(rule_packets(&self.host.run(self.save, &["-c"])?, docker_rule_for(scenario)))
    }
}

/// The rule of Docker's ruleset each scenario's connections must hit:
/// (table, substrings of the rule line).
pub fn docker_rule_for(scenario: Scenario) -> (&'static str, &'static [&'static str]) {
    match scenario {
        Scenario::SandboxToSandbox => ("filter", &["-A FORWARD -i docker0 -o docker0 -j ACCEPT"]),
        Scenario::Masquerade => ("nat", &["-A POSTROUTING -s 10.201.0.0/24 ! -o docker0 -j MASQUERADE"]),
        Scenario::Published | Scenario::Hairpin => ("nat", &["-A DOCKER ", "--to-destination 10.201.0."]),
        Scenario::HostLocal => ("nat", &["-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER"]),
    }
}

/// Sum of the packet counters of `iptables-save -c` lines in `table` that
/// contain every pattern.
pub fn rule_packets(dump: &str, (table, patterns): (&str, &[&str])) -> u64 {
    let mut current = "";
    let mut total = 0;
    for line in dump.lines() {
        if let Some(t) = line.strip_prefix('*') {
            current = t.trim();
            continue;
        }
        if current != table || !line.starts_with('[') || !patterns.iter().all(|p| line.contains(p)) {
            continue;
        }
        if let Some(n) = line.trim_start_matches('[').split(':').next().and_then(|n| n.parse::<u64>().ok()) {
            total += n;
        }
    }
    total
}

pub fn restore_bin(flavour: System) -> &'static str {
    if flavour == System::IptablesLegacy { "iptables-legacy-restore" } else { "iptables-nft-restore" }
}

pub fn save_bin(flavour: System) -> &'static str {
    if flavour == System::IptablesLegacy { "iptables-legacy-save" } else { "iptables-nft-save" }
}

pub fn iptables_bin(flavour: System) -> &'static str {
    if flavour == System::IptablesLegacy { "iptables-legacy" } else { "iptables-nft" }
}

/// One published TCP/UDP mapping of the ruleset.
pub struct Mapping {
    pub proto: &'static str,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The mappings of the measured server, after `fillers` filler ports
/// (so the measured ones sit at the end of each chain, as for the most
/// recently started container).
pub fn mappings(fillers: usize) -> Vec<Mapping> {
    let mut m: Vec<Mapping> = (0..fillers)
        .map(|i| Mapping { proto: "tcp", host_port: FILLER_FIRST + i as u16, ip: FILLER_IP, port: 80 })
        .collect();
    for proto in ["tcp", "udp"] {
        m.push(Mapping { proto, host_port: PUB_IPERF, ip: SERVER_IP, port: IPERF_PORT });
        m.push(Mapping { proto, host_port: PUB_RR, ip: SERVER_IP, port: RR_PORT });
    }
    m
}

/// The rules Docker 20.10 writes for one port (userland-proxy=false):
/// nat DNAT, filter ACCEPT, nat hairpin MASQUERADE, as `-A` lines without
/// the `-A`/`-t` prefix: (table, chain, rule).
pub fn port_rules(m: &Mapping) -> [(&'static str, &'static str, String); 3] {
    let (p, ip, cp, hp) = (m.proto, m.ip, m.port, m.host_port);
    [
        ("nat", "DOCKER", format!("-p {p} -m {p} --dport {hp} -j DNAT --to-destination {ip}:{cp}")),
        ("filter", "DOCKER", format!("-d {ip}/32 ! -i docker0 -o docker0 -p {p} -m {p} --dport {cp} -j ACCEPT")),
        ("nat", "POSTROUTING", format!("-s {ip}/32 -d {ip}/32 -p {p} -m {p} --dport {cp} -j MASQUERADE")),
    ]
}

/// Docker 20.10's full ruleset for one bridge `docker0` on 10.201.0.0/24
/// with the given mappings, in iptables-restore format.
pub fn ruleset(mappings: &[Mapping]) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 10.201.0.0/24 ! -o docker0 -j MASQUERADE\n\
         -A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE\n",
    );
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o docker0 -j DOCKER\n-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n\
         -A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
         -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\n",
    );
    let mut dnat = String::new();
    for m in mappings {
        let [(_, _, d), (_, _, a), (_, _, h)] = port_rules(m);
        dnat.push_str(&format!("-A DOCKER {d}\n"));
        filter.push_str(&format!("-A DOCKER {a}\n"));
        nat.push_str(&format!("-A POSTROUTING {h}\n"));
    }
    nat.push_str(&dnat);
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

/// Loads the ruleset with `fillers` filler ports; returns how long
/// iptables-restore took.
pub fn load_rules(host: &Place, restore: &str, fillers: usize) -> Result<Duration> {
    use std::io::Write as _;
    let text = ruleset(&mappings(fillers));
    let started = Instant::now();
    let mut child = host.cmd(restore)?.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().context("stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    fixture::check(&out, restore)?;
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_three_rules_per_port_and_counts_parse() {
        let text = ruleset(&mappings(3));
        assert_eq!(text.matches("-j DNAT").count(), 7);
        assert_eq!(text.matches("--dport 80 -j ACCEPT").count(), 3);
        let dump = "*nat\n[5:300] -A DOCKER -p tcp -m tcp --dport 9000 -j DNAT --to-destination 10.201.0.10:5201\n\
                    [2:100] -A DOCKER -p tcp -m tcp --dport 10000 -j DNAT --to-destination 10.201.0.99:80\nCOMMIT\n\
                    *filter\n[9:900] -A DOCKER -d 10.201.0.10/32 -j ACCEPT --to-destination 10.201.0.1\nCOMMIT\n";
        assert_eq!(rule_packets(dump, docker_rule_for(Scenario::Published)), 7, "nat DNAT rules only");
    }
}
