//! What the resolver knows: one version of the state and of the
//! configuration's resolvers, and the questions it answers from them. Pure:
//! no I/O once loaded, so every rule is unit-tested.
use std::net::Ipv4Addr;

use crate::{
    cluster::{EndpointRecord, agent},
    config::Config,
    hostfiles,
    paths::Roots,
    state::{Sandbox, State},
};

#[derive(Debug, Default)]
pub struct View {
    state: State,
    /// The config's `dns`, else the host's nameservers, read once per
    /// version rather than once per forwarded question.
    default_upstreams: Vec<Ipv4Addr>,
    /// Other hosts' sandboxes on overlay networks, as this host's cluster
    /// agent last wrote them.
    remote: Vec<EndpointRecord>,
}

/// How to answer one question.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// A name of a network the asker is on: its addresses there.
    Local(Vec<Ipv4Addr>),
    /// Someone else's name: ask these resolvers, in order (none: fail).
    Forward(Vec<Ipv4Addr>),
}

impl View {
    /// Reads the state and configuration as they are now. The state file is
    /// replaced by rename, so a read sees a whole version; a missing or
    /// unreadable one reads as empty.
    pub fn load(roots: &Roots) -> View {
        let state: State =
            std::fs::read(roots.state_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let config = Config::load(&roots.config).unwrap_or_default();
        View::new(state, &config.dns).with_remote(agent::read_remote(&roots.state.join(agent::REMOTE_FILE)))
    }

    /// Adds other hosts' endpoints (served on overlay networks only).
    pub fn with_remote(mut self, remote: Vec<EndpointRecord>) -> View {
        self.remote = remote;
        self
    }

    pub fn new(state: State, config_dns: &[Ipv4Addr]) -> View {
        let default_upstreams = if config_dns.is_empty() { hostfiles::host_nameservers() } else { config_dns.to_vec() };
        View { state, default_upstreams, remote: Vec::new() }
    }

    /// The gateways the resolver listens on: one per user-defined network.
    pub fn gateways(&self) -> Vec<Ipv4Addr> {
        self.state.networks.values().filter(|n| n.has_resolver()).map(|n| n.gateway).collect()
    }

    /// The sandbox that holds `ip` on some network.
    pub fn asker(&self, ip: Ipv4Addr) -> Option<&Sandbox> {
        self.state.sandboxes.values().find(|s| s.attachments.iter().any(|a| a.ip == ip))
    }

    /// How to answer `name` asked by `asker` on the network whose gateway is
    /// `gateway`.
    pub fn decide(&self, gateway: Ipv4Addr, asker: Ipv4Addr, name: &str) -> Decision {
        match self.lookup(gateway, asker, name) {
            Some(ips) => Decision::Local(ips),
            None => Decision::Forward(self.upstreams(gateway, asker)),
        }
    }

    /// Addresses `name` has on the networks the asking sandbox shares with
    /// it, the network the question arrived on first.
    fn lookup(&self, gateway: Ipv4Addr, asker: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
        let name = name.trim_end_matches('.');
        let state = &self.state;
        let asking = self.asker(asker)?;
        let here = state.networks.values().find(|n| n.gateway == gateway)?;
        let mut nets: Vec<&str> = vec![here.name.as_str()];
        nets.extend(asking.attachments.iter().map(|a| a.network.as_str()).filter(|n| *n != here.name));
        for net in nets {
            if !state.networks.get(net).is_some_and(|n| n.has_resolver()) {
                continue;
            }
            let mut ips: Vec<Ipv4Addr> = state
                .attachments_on(net)
                .filter(|(s, a)| {
                    s.name.eq_ignore_ascii_case(name)
                        || a.aliases.iter().any(|al| al.eq_ignore_ascii_case(name))
                        || s.id.get(..12).is_some_and(|short| short.eq_ignore_ascii_case(name))
                })
                .map(|(_, a)| a.ip)
                .collect();
            // An overlay network's members on other hosts answer to their
            // names and aliases here too.
            if state.networks.get(net).is_some_and(|n| n.driver == agent::OVERLAY_DRIVER) {
                ips.extend(
                    self.remote
                        .iter()
                        .filter(|e| e.network == net)
                        .filter(|e| {
                            e.name.eq_ignore_ascii_case(name)
                                || e.aliases.iter().any(|al| al.eq_ignore_ascii_case(name))
                        })
                        .map(|e| e.ip),
                );
            }
            if !ips.is_empty() {
                return Some(ips);
            }
        }
        None
    }

    /// Where names the networks do not hold go: the asker's `--dns`, else
    /// the config's, else the host's; nowhere from an `--internal` network
    /// or for an asker netpath does not know.
    pub fn upstreams(&self, gateway: Ipv4Addr, asker: Ipv4Addr) -> Vec<Ipv4Addr> {
        let internal = self.state.networks.values().any(|n| n.gateway == gateway && n.internal);
        match self.asker(asker) {
            _ if internal => Vec::new(),
            Some(s) => hostfiles::upstreams(&self.default_upstreams, s),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::{Attachment, Network};

    fn network(name: &str, gateway: [u8; 4], internal: bool) -> Network {
        let gateway = Ipv4Addr::from(gateway);
        Network {
            name: name.into(),
            id: format!("{name:0>64}"),
            index: 1,
            created: String::new(),
            driver: "bridge".into(),
            subnet: ipnetwork::Ipv4Network::new(gateway, 24).unwrap(),
            gateway,
            show_gateway: true,
            ip_range: None,
            bridge: format!("br-{name}"),
            mtu: 1500,
            internal,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            is_default: false,
        }
    }

    fn sandbox(name: &str, id: &str, on: &[(&str, [u8; 4], &[&str])]) -> Sandbox {
        let attachments = on
            .iter()
            .map(|(net, ip, aliases)| Attachment {
                network: (*net).into(),
                endpoint_id: String::new(),
                ifname: "eth0".into(),
                host_ifname: String::new(),
                ip: Ipv4Addr::from(*ip),
                mac: [0; 6],
                aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
            })
            .collect();
        Sandbox {
            name: name.into(),
            id: format!("{id:0<64}"),
            created: String::new(),
            hostname: String::new(),
            netns: Default::default(),
            uts: Default::default(),
            attachments,
            pid: None,
            command: Vec::new(),
            published: Vec::new(),
            mode: Default::default(),
            host_config: Default::default(),
            links: Vec::new(),
            expose: Vec::new(),
        }
    }

    /// a1 (alias alpha) and a2 on neta; b1 on netb; i1 on internal neti;
    /// d1 on neta with its own --dns.
    fn view() -> View {
        let mut state = State::default();
        for n in [
            network("neta", [10, 61, 0, 1], false),
            network("netb", [10, 62, 0, 1], false),
            network("neti", [10, 63, 0, 1], true),
        ] {
            state.networks.insert(n.name.clone(), n);
        }
        let mut d1 = sandbox("d1", "dd", &[("neta", [10, 61, 0, 5], &[])]);
        d1.host_config.dns = vec![Ipv4Addr::new(9, 9, 9, 9)];
        for s in [
            sandbox("a1", "0a1b2c3d4e5f", &[("neta", [10, 61, 0, 2], &["alpha"])]),
            sandbox("a2", "a2", &[("neta", [10, 61, 0, 3], &[])]),
            sandbox("b1", "b1", &[("netb", [10, 62, 0, 2], &[])]),
            sandbox("i1", "i1", &[("neti", [10, 63, 0, 2], &[])]),
            d1,
        ] {
            state.sandboxes.insert(s.name.clone(), s);
        }
        View::new(state, &[Ipv4Addr::new(198, 18, 0, 1)])
    }

    const NETA: Ipv4Addr = Ipv4Addr::new(10, 61, 0, 1);
    const A2: Ipv4Addr = Ipv4Addr::new(10, 61, 0, 3);
    const B1: Ipv4Addr = Ipv4Addr::new(10, 62, 0, 2);

    fn local(ip: [u8; 4]) -> Decision {
        Decision::Local(vec![Ipv4Addr::from(ip)])
    }

    #[test]
    fn names_aliases_and_short_ids_on_the_askers_network() {
        let v = view();
        assert_eq!(v.decide(NETA, A2, "a1"), local([10, 61, 0, 2]));
        assert_eq!(v.decide(NETA, A2, "A1."), local([10, 61, 0, 2]), "case and the root dot do not matter");
        assert_eq!(v.decide(NETA, A2, "alpha"), local([10, 61, 0, 2]));
        assert_eq!(v.decide(NETA, A2, "0a1b2c3d4e5f"), local([10, 61, 0, 2]));
    }

    #[test]
    fn other_networks_names_go_upstream() {
        let v = view();
        let upstream = Decision::Forward(vec![Ipv4Addr::new(198, 18, 0, 1)]);
        assert_eq!(v.decide(NETA, A2, "b1"), upstream);
        assert_eq!(v.decide(Ipv4Addr::new(10, 62, 0, 1), B1, "alpha"), upstream);
        assert_eq!(v.decide(NETA, A2, "example.org"), upstream);
    }

    #[test]
    fn upstreams_follow_dns_flags_internal_and_unknown_askers() {
        let v = view();
        assert_eq!(v.decide(NETA, Ipv4Addr::new(10, 61, 0, 5), "x.test"), Decision::Forward(vec![[9, 9, 9, 9].into()]));
        assert_eq!(
            v.decide(Ipv4Addr::new(10, 63, 0, 1), Ipv4Addr::new(10, 63, 0, 2), "x.test"),
            Decision::Forward(vec![])
        );
        assert_eq!(v.decide(NETA, Ipv4Addr::new(10, 61, 0, 99), "a1"), Decision::Forward(vec![]));
    }

    #[test]
    fn other_hosts_members_of_an_overlay_network_resolve() {
        let mut state = State::default();
        let mut ov = network("ov", [10, 64, 0, 1], false);
        ov.driver = agent::OVERLAY_DRIVER.into();
        state.networks.insert("ov".into(), ov);
        state.networks.insert("neta".into(), network("neta", [10, 61, 0, 1], false));
        state.sandboxes.insert("here".into(), sandbox("here", "ab", &[("ov", [10, 64, 0, 2], &[])]));
        state.sandboxes.insert("a2".into(), sandbox("a2", "a2", &[("neta", [10, 61, 0, 3], &[])]));
        let remote = |net: &str, ip: [u8; 4], name: &str| EndpointRecord {
            network: net.into(),
            vni: 4096,
            ip: Ipv4Addr::from(ip),
            mac: [2, 0, 0, 0, 0, 1],
            name: name.into(),
            aliases: vec![format!("{name}-alias")],
            host: "h2".into(),
            vtep: Ipv4Addr::new(192, 168, 200, 12),
        };
        let v = View::new(state, &[Ipv4Addr::new(198, 18, 0, 1)]).with_remote(vec![
            remote("ov", [10, 64, 0, 66], "far"),
            // Same network name as a local bridge network: not served there.
            remote("neta", [10, 61, 0, 66], "imposter"),
        ]);
        let (ov_gw, here) = (Ipv4Addr::new(10, 64, 0, 1), Ipv4Addr::new(10, 64, 0, 2));
        assert_eq!(v.decide(ov_gw, here, "far"), local([10, 64, 0, 66]));
        assert_eq!(v.decide(ov_gw, here, "FAR-alias."), local([10, 64, 0, 66]));
        assert!(matches!(v.decide(NETA, A2, "imposter"), Decision::Forward(_)));
    }

    #[test]
    fn gateways_of_user_defined_networks() {
        let mut g = view().gateways();
        g.sort();
        assert_eq!(g, [Ipv4Addr::new(10, 61, 0, 1), Ipv4Addr::new(10, 62, 0, 1), Ipv4Addr::new(10, 63, 0, 1)]);
    }
}
