//! The one place netpath meets Docker's firewall. netpath's data path
//! hands a container's packets for the outside (new connections being
//! masqueraded, replies of published ports) to the kernel's routing, which
//! passes netfilter's FORWARD hook; dockerd sets that chain's policy to
//! DROP when it turns IP forwarding on itself, and accepts only its own
//! bridges. So each network made for Docker gets one ACCEPT rule per
//! direction for its bridge, marked with the network's ID, at the top of
//! FORWARD: no rule names a container, address or port, and the count does
//! not grow with containers or published ports. They go with the network.
//! (A data path that redirects to the uplink itself, `bpf_redirect_neigh`
//! after a FIB lookup, would need none: left for the data path's owners.)
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::state::{Network, State};

const IPTABLES: &str = "iptables";

/// The comment that marks the rules of network `net`.
fn mark(net: &Network) -> String {
    format!("netpath network {}", &net.id[..12])
}

fn rules(net: &Network) -> [Vec<String>; 2] {
    let rule = |dir: &str| {
        vec![
            dir.into(),
            net.bridge.clone(),
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            mark(net),
            "-j".into(),
            "ACCEPT".into(),
        ]
    };
    [rule("-i"), rule("-o")]
}

fn iptables(args: &[&str], rule: &[String]) -> Result<bool> {
    let out = Command::new(IPTABLES)
        .arg("-w")
        .args(args)
        .args(rule)
        .output()
        .with_context(|| format!("running {IPTABLES}"))?;
    Ok(out.status.success())
}

/// Whether the host has iptables at all (without it, nothing filters).
fn available() -> bool {
    Command::new(IPTABLES).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Lets the network's bridge traffic through FORWARD (idempotent).
pub fn allow(net: &Network) -> Result<()> {
    if net.bridge.is_empty() || !available() {
        return Ok(());
    }
    for rule in rules(net) {
        if !iptables(&["-C", "FORWARD"], &rule)? && !iptables(&["-I", "FORWARD", "1"], &rule)? {
            bail!("could not let bridge {} through the FORWARD chain", net.bridge);
        }
    }
    Ok(())
}

/// Takes the network's rules away (absent ones count as removed).
pub fn revoke(net: &Network) -> Result<()> {
    if net.bridge.is_empty() || !available() {
        return Ok(());
    }
    for rule in rules(net) {
        while iptables(&["-C", "FORWARD"], &rule)? {
            if !iptables(&["-D", "FORWARD"], &rule)? {
                bail!("could not remove the FORWARD rule of bridge {}", net.bridge);
            }
        }
    }
    Ok(())
}

/// At plugin start: every Docker network's rules in place, and rules of
/// networks no longer in the state (a killed plugin's) removed.
pub fn reconcile(state: &State) -> Result<()> {
    let is_docker = |n: &Network| n.labels.contains_key(crate::state::LABEL_ENGINE_NETWORK);
    if !available() {
        return Ok(());
    }
    let out = Command::new(IPTABLES).args(["-w", "-S", "FORWARD"]).output().context("listing FORWARD")?;
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in listed.lines().filter(|l| l.contains("\"netpath network ")) {
        let known =
            state.networks.values().filter(|n| is_docker(n)).any(|n| line.contains(&format!("\"{}\"", mark(n))));
        if !known {
            let rule: Vec<String> = line.split_whitespace().skip(2).map(|w| w.trim_matches('"').to_string()).collect();
            // The comment has spaces: re-join what -S split.
            let rule = rejoin_comment(rule);
            iptables(&["-D", "FORWARD"], &rule)?;
        }
    }
    for net in state.networks.values().filter(|n| is_docker(n)) {
        allow(net)?;
    }
    Ok(())
}

/// `--comment "netpath network ID"` as `iptables -S` prints it, split on
/// spaces: the comment's words joined back into one argument.
fn rejoin_comment(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        out.push(w.clone());
        if w == "--comment" {
            let parts: Vec<String> = it.by_ref().take(3).collect();
            out.push(parts.join(" "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_rule_reads_back_as_arguments() {
        let line = r#"-A FORWARD -i br-0123456789ab -m comment --comment "netpath network 0123456789ab" -j ACCEPT"#;
        let words: Vec<String> = line.split_whitespace().skip(2).map(|w| w.trim_matches('"').to_string()).collect();
        assert_eq!(
            rejoin_comment(words),
            ["-i", "br-0123456789ab", "-m", "comment", "--comment", "netpath network 0123456789ab", "-j", "ACCEPT"]
        );
    }
}
