//! The files a sandbox sees in place of the host's — /etc/hosts,
//! /etc/resolv.conf, /etc/hostname — written the way Docker 20.10 writes
//! them, and the environment `--link` gives its commands.
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    host::Host,
    network::DEFAULT_NETWORK_NAME,
    publish::Proto,
    state::{Mode, Sandbox, State},
};

const HOSTS_HEADER: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

const FILES: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

pub fn hosts(state: &State, sandbox: &Sandbox) -> String {
    let mut out = HOSTS_HEADER.to_string();
    for (name, ip) in &sandbox.host_config.extra_hosts {
        let _ = writeln!(out, "{ip}\t{name}");
    }
    for link in &sandbox.links {
        if let Some(t) = state.sandboxes.get(&link.name) {
            if let Some(a) = t.attachment(DEFAULT_NETWORK_NAME) {
                let _ = writeln!(out, "{}\t{} {} {}", a.ip, link.alias, &t.id[..12], t.name);
            }
        }
    }
    if let Some(a) = sandbox.attachments.first() {
        let _ = match sandbox.hostname.split_once('.') {
            Some((short, _)) => writeln!(out, "{}\t{} {short}", a.ip, sandbox.hostname),
            None => writeln!(out, "{}\t{}", a.ip, sandbox.hostname),
        };
    }
    out
}

/// Nameservers of the host's resolv.conf, loopback ones left out (they mean
/// nothing inside a sandbox), as Docker filters them.
pub fn host_nameservers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

fn host_resolv_lines(prefix: &str) -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(prefix).map(|r| r.split_whitespace().map(String::from).collect::<Vec<_>>()))
        .flatten()
        .collect()
}

/// Upstream resolvers for a sandbox: its `--dns`, else the config's `dns`,
/// else the host's.
pub fn upstreams(host_dns: &[Ipv4Addr], sandbox: &Sandbox) -> Vec<Ipv4Addr> {
    if !sandbox.host_config.dns.is_empty() {
        return sandbox.host_config.dns.clone();
    }
    if !host_dns.is_empty() {
        return host_dns.to_vec();
    }
    host_nameservers()
}

pub fn resolv_conf(host: &Host, state: &State, sandbox: &Sandbox) -> String {
    let hc = &sandbox.host_config;
    let search = if hc.dns_search.is_empty() {
        if host.config.dns_search.is_empty() { host_resolv_lines("search") } else { host.config.dns_search.clone() }
    } else {
        hc.dns_search.clone()
    };
    let options = if hc.dns_options.is_empty() { host_resolv_lines("options") } else { hc.dns_options.clone() };
    // On a user-defined network names come from netpath's resolver on the
    // gateway, which forwards everything else upstream.
    let embedded = sandbox
        .attachments
        .iter()
        .find(|a| state.networks.get(&a.network).is_some_and(|n| n.has_resolver()))
        .and_then(|a| state.networks.get(&a.network))
        .map(|n| n.gateway);
    let nameservers = match embedded {
        Some(gw) => vec![gw],
        None => upstreams(&host.config.dns, sandbox),
    };
    let mut out = String::new();
    if !search.is_empty() {
        let _ = writeln!(out, "search {}", search.join(" "));
    }
    for ns in nameservers {
        let _ = writeln!(out, "nameserver {ns}");
    }
    if !options.is_empty() {
        let _ = writeln!(out, "options {}", options.join(" "));
    }
    out
}

/// Writes the sandbox's files under its runtime directory.
pub fn write(host: &Host, state: &State, sandbox: &Sandbox) -> Result<()> {
    if sandbox.mode != Mode::Attached {
        return Ok(());
    }
    let dir = host.roots.sandbox_dir(&sandbox.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let contents = [hosts(state, sandbox), resolv_conf(host, state, sandbox), format!("{}\n", sandbox.hostname)];
    for (name, text) in FILES.iter().zip(contents) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

/// Bind mounts that show a sandbox's files at their /etc paths.
pub fn mounts(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    FILES
        .iter()
        .map(|f| (dir.join(f), Path::new("/etc").join(f)))
        .filter(|(src, dst)| src.exists() && dst.exists())
        .collect()
}

/// Docker's `--link` variables: `ALIAS_NAME`, `ALIAS_PORT`, and per port
/// `ALIAS_PORT_6379_TCP{,_ADDR,_PORT,_PROTO}`.
pub fn link_env(state: &State, sandbox: &Sandbox) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for link in &sandbox.links {
        let Some(t) = state.sandboxes.get(&link.name) else { continue };
        let Some(a) = t.attachment(DEFAULT_NETWORK_NAME) else { continue };
        let prefix = link.alias.to_uppercase().replace('-', "_");
        env.push((format!("{prefix}_NAME"), format!("/{}/{}", sandbox.name, link.alias)));
        let mut ports: Vec<(u16, Proto)> = t.expose.clone();
        for m in &t.published {
            for i in 0..m.port_count() {
                ports.push((m.container_first + i, m.proto));
            }
        }
        ports.sort_by_key(|(p, proto)| (*p, proto.name()));
        ports.dedup();
        if let Some((p, proto)) = ports.first() {
            env.push((format!("{prefix}_PORT"), format!("{}://{}:{p}", proto.name(), a.ip)));
        }
        for (p, proto) in ports {
            let base = format!("{prefix}_PORT_{p}_{}", proto.name().to_uppercase());
            env.push((base.clone(), format!("{}://{}:{p}", proto.name(), a.ip)));
            env.push((format!("{base}_ADDR"), a.ip.to_string()));
            env.push((format!("{base}_PORT"), p.to_string()));
            env.push((format!("{base}_PROTO"), proto.name().to_string()));
        }
    }
    env
}
