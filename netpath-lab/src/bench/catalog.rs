//! What the bench knows how to measure: the systems under test and the
//! scenarios (who talks to whom). Plain names and labels; how each system
//! is built lives in `systems/`, one file per system.
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Netpath,
    /// netpath with XDP in front of TC on the uplink; the outside sends
    /// complete checksums, as a real wire does (TX offload off).
    NetpathXdp,
    /// netpath's TC path on that same wire, XDP detached: the comparison
    /// for the XDP row.
    NetpathTcSameWire,
    /// Docker 20.10's ruleset (userland-proxy=false) loaded with iptables-nft.
    IptablesNft,
    /// The same ruleset through iptables-legacy.
    IptablesLegacy,
    /// docker-proxy (Docker's userland proxy) for host-local access.
    DockerProxy,
    /// Docker Engine 20.10 itself, dockerd in the lab host.
    Docker,
    /// Docker Engine with --userland-proxy=false.
    DockerNoProxy,
    /// Docker Engine with its containers on a `docker network create -d
    /// netpath` network (`netpath docker-plugin`).
    DockerNetpath,
    /// Podman 4.3 with netavark, rootful, in the lab host.
    Podman,
    /// The same Podman with the CNI backend and netpath's CNI plugin.
    PodmanNetpath,
    /// Linux bridge and plain routing, no NAT, no rules: the bound.
    Bridge,
    /// Two namespaces joined by one veth pair: the bound for one hop.
    Veth,
    /// Across hosts: Flannel's VXLAN backend by hand (bridge, VXLAN device,
    /// route, neighbour and FDB entries), no eBPF. Not in `ALL`: the
    /// cross-host bench (`crosshost`) measures it on the multi-host lab.
    KernelVxlan,
    /// Across hosts: Flannel's host-gw backend (the same bridge and veths as
    /// `KernelVxlan`, routed over the underlay, no encapsulation): the bound.
    Underlay,
    /// Across hosts: Docker swarm's overlay (two hermetic dockerds in a swarm).
    DockerSwarm,
    /// Across hosts: netpath's overlay driver (etcd in the lab, eBPF VXLAN).
    NetpathOverlay,
}

impl System {
    pub fn key(self) -> &'static str {
        match self {
            System::Netpath => "netpath",
            System::NetpathXdp => "netpath-xdp",
            System::NetpathTcSameWire => "netpath-tc-same-wire",
            System::IptablesNft => "iptables-nft",
            System::IptablesLegacy => "iptables-legacy",
            System::DockerProxy => "docker-proxy",
            System::Docker => "docker",
            System::DockerNoProxy => "docker-no-proxy",
            System::DockerNetpath => "docker-netpath",
            System::Podman => "podman",
            System::PodmanNetpath => "podman-netpath",
            System::Bridge => "bridge",
            System::Veth => "veth",
            System::KernelVxlan => "kernel-vxlan",
            System::Underlay => "underlay",
            System::DockerSwarm => "docker-swarm",
            System::NetpathOverlay => "netpath-overlay",
        }
    }

    pub const ALL: [System; 13] = [
        System::Netpath,
        System::NetpathXdp,
        System::NetpathTcSameWire,
        System::IptablesNft,
        System::IptablesLegacy,
        System::DockerProxy,
        System::Docker,
        System::DockerNoProxy,
        System::DockerNetpath,
        System::Podman,
        System::PodmanNetpath,
        System::Bridge,
        System::Veth,
    ];

    /// The scenarios this system is measured in.
    pub fn scenarios(self) -> &'static [Scenario] {
        match self {
            System::Netpath
            | System::IptablesNft
            | System::IptablesLegacy
            | System::Docker
            | System::DockerNoProxy
            | System::DockerNetpath => &Scenario::ALL,
            // XDP on the uplink changes only what arrives from the outside.
            System::NetpathXdp | System::NetpathTcSameWire => &[Scenario::Published, Scenario::Masquerade],
            System::DockerProxy => &[Scenario::HostLocal],
            // Podman's sandbox to sandbox is the plain kernel bridge, measured already.
            System::Podman | System::PodmanNetpath => {
                &[Scenario::Masquerade, Scenario::Published, Scenario::Hairpin, Scenario::HostLocal]
            }
            System::Bridge => {
                &[Scenario::SandboxToSandbox, Scenario::Masquerade, Scenario::Published, Scenario::HostLocal]
            }
            System::Veth => &[Scenario::SandboxToSandbox],
            // Measured by the cross-host bench only (`crosshost`), between two hosts' sandboxes.
            System::KernelVxlan | System::Underlay | System::DockerSwarm | System::NetpathOverlay => {
                &[Scenario::SandboxToSandbox]
            }
        }
    }

    pub fn parse(text: &str) -> Result<System> {
        System::ALL.into_iter().find(|s| s.key() == text).with_context(|| format!("unknown system {text:?}"))
    }

    pub fn label(self) -> &'static str {
        match self {
            System::Netpath => "netpath",
            System::NetpathXdp => "netpath, XDP on the uplink (sender TX csum offload off)",
            System::NetpathTcSameWire => "netpath, TC only (sender TX csum offload off)",
            System::IptablesNft => "iptables-nft",
            System::IptablesLegacy => "iptables-legacy",
            System::DockerProxy => "docker-proxy",
            System::Docker => "docker",
            System::DockerNoProxy => "docker (no userland proxy)",
            System::DockerNetpath => "docker with netpath driver",
            System::Podman => "podman + netavark",
            System::PodmanNetpath => "podman + netpath CNI",
            System::Bridge => "bridge, no NAT (bound)",
            System::Veth => "raw veth (bound)",
            System::KernelVxlan => "kernel VXLAN, Flannel-style (no eBPF)",
            System::Underlay => "underlay, no encapsulation (host-gw, bound)",
            System::DockerSwarm => "docker swarm overlay (20.10)",
            System::NetpathOverlay => "netpath overlay (eBPF VXLAN)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Sandbox to sandbox on one network.
    SandboxToSandbox,
    /// Sandbox to the outside, masqueraded (the bound: routed, no NAT).
    Masquerade,
    /// Outside to a published port (the bound: routed to the sandbox).
    Published,
    /// Sandbox to a published port through a host address.
    Hairpin,
    /// Host process to 127.0.0.1:PORT (the bound: straight to the sandbox).
    HostLocal,
}

impl Scenario {
    pub const ALL: [Scenario; 5] =
        [Scenario::SandboxToSandbox, Scenario::Masquerade, Scenario::Published, Scenario::Hairpin, Scenario::HostLocal];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::SandboxToSandbox => "sandbox->sandbox",
            Scenario::Masquerade => "sandbox->outside (masquerade)",
            Scenario::Published => "outside->published port",
            Scenario::Hairpin => "hairpin",
            Scenario::HostLocal => "host->127.0.0.1:PORT",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Scenario::SandboxToSandbox => "s2s",
            Scenario::Masquerade => "masquerade",
            Scenario::Published => "published",
            Scenario::Hairpin => "hairpin",
            Scenario::HostLocal => "host-local",
        }
    }

    pub fn parse(text: &str) -> Result<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.key() == text).with_context(|| {
            format!(
                "unknown scenario {text:?} (known: {})",
                Scenario::ALL.iter().map(|s| s.key()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}
