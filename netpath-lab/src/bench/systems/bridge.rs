//! The kernel's own building blocks as Docker lays them out: a Linux bridge
//! `docker0` on the bench subnet with the server and client sandboxes on
//! veth pairs, forwarding on. The iptables baselines load Docker's ruleset
//! onto it; the no-NAT bound uses it bare.
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{
    bench::{
        testbed::{ExtraNs, Place},
        topology::{CLIENT_IP, GATEWAY, SERVER_IP},
    },
    fixture::{Binaries, Lab},
};

/// A lab with the bridge and its two sandboxes.
pub struct BridgeLab {
    pub lab: Lab,
    /// The sandboxes' namespaces (removed before the lab).
    pub extra: ExtraNs,
    pub server: Place,
    pub client: Place,
}

pub fn build(tag: &str, bins: &Binaries) -> Result<BridgeLab> {
    let lab = Lab::create(tag, bins)?;
    let mut extra = ExtraNs::default();
    let host = Place::ns(&lab.host_ns);
    let srv_ns = extra.add(PathBuf::from(format!("/run/netns/{}-srv", lab.id)))?;
    let cli_ns = extra.add(PathBuf::from(format!("/run/netns/{}-cli", lab.id)))?;
    host.run("ip", &["link", "add", "docker0", "type", "bridge"])?;
    host.run("ip", &["addr", "add", &format!("{GATEWAY}/24"), "dev", "docker0"])?;
    host.run("ip", &["link", "set", "docker0", "up"])?;
    for (ns, ip, veth) in [(&srv_ns, SERVER_IP, "vethsrv"), (&cli_ns, CLIENT_IP, "vethcli")] {
        let name = ns.file_name().and_then(|n| n.to_str()).context("netns name")?;
        host.run("ip", &["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name])?;
        host.run("ip", &["link", "set", veth, "master", "docker0", "up"])?;
        let p = Place::ns(ns);
        p.run("ip", &["link", "set", "lo", "up"])?;
        p.run("ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        p.run("ip", &["link", "set", "eth0", "up"])?;
        p.run("ip", &["route", "add", "default", "via", &GATEWAY.to_string()])?;
    }
    host.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    Ok(BridgeLab { lab, extra, server: Place::ns(&srv_ns), client: Place::ns(&cli_ns) })
}
