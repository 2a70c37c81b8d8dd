//! Shared helpers for the lab tests: where the netpath and netpath-lab
//! binaries are, and labs built with the rig's own fixture (`netpath_lab`).
use std::path::{Path, PathBuf};

pub mod cluster_lab;
pub mod craft;
pub mod foreign;
pub mod frames;
pub mod progtest;

use anyhow::Result;
pub use netpath_lab::{At, Binaries, Lab};
use serde_json::Value;

/// The binaries under test: `NETPATH_BIN` and `NETPATH_LAB_BIN` (set by
/// `cargo xtask test`), else the release builds next to this workspace.
pub fn bins() -> Binaries {
    Binaries::from_env_or(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

pub fn lab(tag: &str) -> Lab {
    Lab::create(tag, &bins()).expect("building the lab")
}

/// `netpath ps --json` as parsed JSON.
pub fn sandboxes(lab: &Lab) -> Result<Vec<Value>> {
    Ok(serde_json::from_str(&lab.netpath_ok(&["ps", "--json"])?)?)
}

/// The host-side veth of sandbox `name`.
pub fn host_ifname(lab: &Lab, name: &str) -> Result<String> {
    let all = sandboxes(lab)?;
    let s = all.iter().find(|s| s["name"] == name).ok_or_else(|| anyhow::anyhow!("no sandbox {name}"))?;
    Ok(s["attachments"][0]["host_ifname"].as_str().unwrap_or_default().to_string())
}

/// Runs a command, returning (exit code, stdout, stderr).
pub fn output(cmd: &mut std::process::Command) -> Result<(i32, String, String)> {
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `netpath-lab PROBE ARGS...` run at `at`, without going through netpath's
/// own exec (so the probe sees exactly the namespace).
pub fn probe(lab: &Lab, at: At, args: &[&str]) -> std::process::Command {
    lab.probe(at, args).expect("probe command")
}

/// Starts `sink` (a probe that prints a "listening" line first), runs
/// `send` to completion, and returns both reports.
pub fn transfer(sink: std::process::Command, mut send: std::process::Command) -> Result<(Value, Value)> {
    use std::io::Read;
    let (mut child, mut out) = netpath_lab::probes::start_sink(sink)?;
    let sent = send.output();
    let sent = match sent {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("sender failed: {other:?}");
        }
    };
    let mut received = String::new();
    out.read_to_string(&mut received)?;
    anyhow::ensure!(child.wait()?.success(), "sink failed");
    Ok((serde_json::from_str(received.trim())?, serde_json::from_str(sent.trim())?))
}

/// The bytes [`tcp_pair`] sends.
pub const PAIR_BYTES: usize = 4096;

/// The probe line of a TCP sink on `port`, for [`tcp_pair`].
pub fn sink_line(port: u16) -> String {
    format!("tcp-sink --port {port} --timeout 10")
}

/// The probe line of a [`PAIR_BYTES`] TCP send to `to`, for [`tcp_pair`].
pub fn send_line(to: &str) -> String {
    format!("tcp-send --to {to} --bytes {PAIR_BYTES} --timeout 5")
}

/// One TCP transfer between two probe commands built from [`sink_line`]
/// and [`send_line`] (anywhere: sandboxes, engines' namespaces, the
/// outside); the payload is checked to have arrived whole. Returns
/// (receiver report, sender report).
pub fn tcp_pair(sink: std::process::Command, send: std::process::Command) -> (Value, Value) {
    let (r, s) = transfer(sink, send).unwrap();
    assert!(r["bytes"] == PAIR_BYTES && r["sha256"] == s["sha256"], "payload mismatch: {r} vs {s}");
    (r, s)
}

/// `netpath-lab PROBE ...` (`line` split on spaces) in the network
/// namespace at `ns` (an engine's, or one made with `ip netns add`).
pub fn probe_in(lab: &Lab, ns: &Path, line: &str) -> std::process::Command {
    let mut cmd = netpath::netns::Join::net(ns).command(&lab.lab_bin).unwrap();
    cmd.args(words(line));
    cmd
}

/// What the data path holds for the sandbox address `ip`: its endpoint
/// entry and the published ports that lead to it.
pub fn datapath_entries(lab: &Lab, ip: [u8; 4]) -> usize {
    let dp = lab.datapath();
    let endpoint = dp.endpoints().unwrap().get(&netpath_common::EndpointKey { ipv4: ip }, 0).is_ok();
    let published = dp.published().unwrap().iter().flatten().filter(|(_, t)| t.addr == ip).count();
    usize::from(endpoint) + published
}

/// One TCP transfer of `bytes` from `from` to `to_addr` (port `port` of a
/// sink at `sink_at`); returns (receiver report, sender report) after
/// checking the payload arrived intact.
pub fn tcp_check(lab: &Lab, sink_at: At, sink_port: u16, from: At, to: &str, bytes: usize) -> Result<(Value, Value)> {
    let (r, s) = transfer(
        probe(lab, sink_at, &["tcp-sink", "--port", &sink_port.to_string(), "--timeout", "10"]),
        probe(lab, from, &["tcp-send", "--to", to, "--bytes", &bytes.to_string(), "--timeout", "5"]),
    )?;
    anyhow::ensure!(r["bytes"] == bytes && r["sha256"] == s["sha256"], "payload mismatch: {r} vs {s}");
    Ok((r, s))
}

/// A command line written as one string, split on whitespace.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Every program's counters, for exact before/after comparisons.
pub fn all_counters(lab: &Lab) -> Vec<(netpath_common::Program, netpath_common::Counters)> {
    counters_of(&lab.datapath())
}

/// Every program's counters in the data path `dp` (a lab's or a lab host's).
pub fn counters_of(dp: &netpath::datapath::Datapath) -> Vec<(netpath_common::Program, netpath_common::Counters)> {
    netpath_common::Program::ALL.iter().map(|&p| (p, dp.counters(p).expect("reading STATS"))).collect()
}

/// What moved between two readings, as `(program, reason) -> packets`,
/// only the non-zero ones: a test compares it with exactly what it sent.
pub fn moved(
    before: &[(netpath_common::Program, netpath_common::Counters)],
    after: &[(netpath_common::Program, netpath_common::Counters)],
) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
    let mut out = std::collections::BTreeMap::new();
    for ((p, b), (_, a)) in before.iter().zip(after) {
        for (reason, s) in a.since(b).reasons() {
            if s.packets != 0 {
                out.insert((p.name(), reason.name()), s.packets);
            }
        }
    }
    out
}

/// Writes a sysctl in the namespace at `ns` (the lab's own namespaces only).
pub fn sysctl_in(ns: &std::path::Path, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    frames::in_netns(ns, || Ok(std::fs::write(&path, value)?))
}

/// Runs `ip ARGS` in the namespace at `ns`; its stdout.
pub fn ip_in(ns: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = frames::in_netns(ns, || Ok(std::process::Command::new("ip").args(args).output()?))?;
    anyhow::ensure!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The bridge device of network `name`.
pub fn bridge_of(lab: &Lab, name: &str) -> Result<String> {
    let v: Value = serde_json::from_str(&lab.netpath_ok(&["network", "inspect", name])?)?;
    Ok(v[0]["Bridge"].as_str().ok_or_else(|| anyhow::anyhow!("no bridge for {name}"))?.to_string())
}

/// The network namespace of sandbox `name`.
pub fn sandbox_ns(lab: &Lab, name: &str) -> PathBuf {
    lab.roots.netns_dir().join(name)
}
