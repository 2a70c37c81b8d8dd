//! Upgrade in place: a build with changed programs replaces the pinned ones
//! through the pinned links while connections run; maps, conntrack and the
//! flows survive, and the new programs are the ones counting.
//!
//! The "changed program" is a second netpath, built by `cargo xtask test`
//! with the kernel crate's test-only `upgrade-probe` feature: its programs
//! also count every packet in `UPGRADE_PROBE_SLOT`, which no shipped build
//! touches (`NETPATH_UPGRADE_BIN`, else `target/release/netpath-upgrade-probe`).
use std::{
    collections::HashSet,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command},
    time::{Duration, Instant},
};

use netpath_common::{FlowKey, Program, UPGRADE_PROBE_SLOT, map_layout, map_names, program_names};
use netpath_tests::{At, Lab, lab, output, probe};
use serde_json::Value;

const HOST: &str = "198.18.0.2";
const OUTSIDE: &str = "198.18.0.1";

fn upgrade_bin() -> PathBuf {
    std::env::var_os("NETPATH_UPGRADE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/netpath-upgrade-probe"))
}

/// `netpath ARGS` run by the binary `bin` in the lab's host, on its roots.
fn netpath_as(lab: &Lab, bin: &Path, args: &[&str]) -> Command {
    assert!(bin.exists(), "{} is missing: `cargo xtask test` builds it", bin.display());
    let mut cmd = lab.host_cmd(bin).unwrap();
    cmd.args(args);
    for (k, v) in lab.roots.env() {
        cmd.env(k, v);
    }
    cmd
}

fn probe_counts(lab: &Lab) -> Vec<(Program, u64)> {
    let dp = lab.datapath();
    Program::ALL.iter().map(|&p| (p, dp.counters(p).unwrap().slots[UPGRADE_PROBE_SLOT].packets)).collect()
}

fn program_ids(lab: &Lab) -> Vec<(&'static str, u32)> {
    let dp = lab.datapath();
    [
        program_names::FROM_CONTAINER,
        program_names::FROM_UPLINK,
        program_names::TO_UPLINK,
        program_names::XDP_FROM_UPLINK,
        program_names::SOCK_CONNECT4,
        program_names::SOCK_SENDMSG4,
        program_names::SOCK_RECVMSG4,
    ]
    .into_iter()
    .map(|n| (n, dp.program_info(n).unwrap().id()))
    .collect()
}

fn pins(lab: &Lab) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![lab.roots.bpf.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
            out.push(e.path().display().to_string());
        }
    }
    out.sort();
    out
}

fn conntrack_keys(lab: &Lab) -> HashSet<(FlowKey, u8)> {
    lab.datapath().conntrack_entries().unwrap().into_iter().map(|(k, e)| (k, e.flags)).collect()
}

struct Running {
    sink: Child,
    sink_out: std::io::BufReader<ChildStdout>,
    sender: Child,
}

impl Running {
    fn start(sink: Command, mut send: Command) -> Running {
        let (sink, sink_out) = netpath_lab::probes::start_sink(sink).unwrap();
        send.stdout(std::process::Stdio::piped());
        Running { sink, sink_out, sender: send.spawn().unwrap() }
    }

    /// Both reports, after checking every byte arrived intact.
    fn finish(mut self) -> (Value, Value) {
        let sent = self.sender.wait_with_output().unwrap();
        assert!(sent.status.success(), "sender failed: {sent:?}");
        let mut received = String::new();
        self.sink_out.read_to_string(&mut received).unwrap();
        assert!(self.sink.wait().unwrap().success(), "sink failed");
        let r: Value = serde_json::from_str(received.trim()).unwrap();
        let s: Value = serde_json::from_str(String::from_utf8_lossy(&sent.stdout).trim()).unwrap();
        assert_eq!((&r["bytes"], &r["sha256"]), (&s["bytes"], &s["sha256"]), "payload arrived intact");
        (r, s)
    }
}

/// Waits (bounded) until conntrack holds an entry `wanted` accepts.
fn await_flow(lab: &Lab, what: &str, wanted: impl Fn(&FlowKey) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !lab.datapath().conntrack_entries().unwrap().iter().any(|(k, _)| wanted(k)) {
        assert!(Instant::now() < deadline, "no conntrack entry for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn upgrade_in_place_keeps_flows_and_conntrack() {
    let lab = lab("upgrade");
    let new = upgrade_bin();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.60.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "srv", "--network", "n1", "-p", "8080:80"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "cli", "--network", "n1"]).unwrap();
    assert!(probe_counts(&lab).iter().all(|(_, n)| *n == 0), "the shipped build never counts the probe slot");

    // A 20 s transfer into a published port, and a masqueraded connection
    // that stays idle across the upgrade and sends only afterwards.
    let bytes = (20 << 20).to_string();
    let published = Running::start(
        probe(&lab, At::Sandbox("srv"), &["tcp-sink", "--port", "80", "--timeout", "60"]),
        probe(&lab, At::Outside, &["tcp-send", "--to", &format!("{HOST}:8080"), "--bytes", &bytes, "--duration", "20"]),
    );
    let idle = Running::start(
        probe(&lab, At::Outside, &["tcp-sink", "--port", "7000", "--timeout", "60"]),
        probe(
            &lab,
            At::Sandbox("cli"),
            &["tcp-send", "--to", &format!("{OUTSIDE}:7000"), "--bytes", "1000000", "--delay", "20"],
        ),
    );
    await_flow(&lab, "the published port", |k| k.dport == 8080 && k.daddr == [198, 18, 0, 2]);
    await_flow(&lab, "the masqueraded flow", |k| k.dport == 7000 && k.saddr == [10, 60, 0, 3]);
    // Let the transfer get under way.
    std::thread::sleep(Duration::from_secs(3));

    let dp = lab.datapath();
    let programs_before = program_ids(&lab);
    let links_before = dp.link_programs().unwrap();
    let map_ids = || -> Vec<u32> { map_layout::ALL.iter().map(|m| dp.map_id(m.name).unwrap()).collect() };
    let maps_before = map_ids();
    let flows_before = conntrack_keys(&lab);
    assert!(links_before.len() >= 3, "sandbox veths and the uplink are attached: {links_before:?}");

    let (code, stdout, stderr) = output(&mut netpath_as(&lab, &new, &["system", "upgrade"])).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("upgraded in place"), "{stdout}");

    // Every link now runs the new program of its kind, over the same maps.
    let programs_after = program_ids(&lab);
    assert_eq!(map_ids(), maps_before, "every pinned map is the same one");
    for ((name, before), (_, after)) in programs_before.iter().zip(&programs_after) {
        assert_ne!(before, after, "{name} was replaced");
        let maps = dp.program_info(name).unwrap().map_ids().unwrap().unwrap_or_default();
        assert!(maps.iter().any(|m| maps_before.contains(m)), "the new {name} uses the pinned maps: {maps:?}");
    }
    let links_after = dp.link_programs().unwrap();
    assert_eq!(links_after.len(), links_before.len());
    for (link, id) in &links_after {
        let program = link.rsplit_once('@').unwrap().1;
        let new_id = programs_after.iter().find(|(n, _)| *n == program).unwrap().1;
        assert_eq!(*id, new_id, "{link} runs the new {program}");
    }
    let kept = conntrack_keys(&lab);
    let lost: Vec<_> = flows_before.difference(&kept).collect();
    assert!(lost.is_empty(), "conntrack entries are kept: lost {lost:?}");

    let (r, _) = published.finish();
    assert_eq!(r["bytes"], 20 << 20);
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{OUTSIDE}:")), "DNAT kept the client's address: {r}");
    let (r, _) = idle.finish();
    assert!(r["peer"].as_str().unwrap().starts_with(&format!("{HOST}:")), "still masqueraded: {r}");
    let counts = probe_counts(&lab);
    for p in [Program::FromContainer, Program::FromUplink, Program::ToUplink] {
        let n = counts.iter().find(|(q, _)| *q == p).unwrap().1;
        assert!(n > 0, "the new {} counts packets: {counts:?}", p.name());
    }

    // Again with the same build: nothing to do.
    let (code, stdout, _) = output(&mut netpath_as(&lab, &new, &["system", "upgrade"])).unwrap();
    assert_eq!(code, 0);
    assert!(stdout.contains("already runs this build"), "{stdout}");

    // And back: the first command of the other build that needs the data
    // path switches it too; then the probe slot stands still.
    lab.netpath_ok(&["run", "-d", "--name", "late", "--network", "n1"]).unwrap();
    let back = program_ids(&lab);
    assert!(back.iter().zip(&programs_after).all(|(a, b)| a.1 != b.1), "replaced again: {back:?}");
    let before = probe_counts(&lab);
    let (code, ..) = output(&mut probe(
        &lab,
        At::Sandbox("late"),
        &["tcp-send", "--to", &format!("{OUTSIDE}:7001"), "--bytes", "1", "--timeout", "1"],
    ))
    .unwrap();
    assert_ne!(code, 0, "nothing listens on 7001: refused, after packets went both ways");
    assert_eq!(probe_counts(&lab), before, "the old build's programs are back");
}

#[test]
fn incompatible_layouts_are_refused_and_old_pins_migrated() {
    let lab = lab("upglayout");
    let new = upgrade_bin();
    // XDP on the uplink too, so that an XDP link is switched as well.
    lab.configure(r#"{"uplink-xdp": "generic"}"#).unwrap();
    lab.netpath_ok(&["network", "create", "n1", "--subnet", "10.61.0.0/24"]).unwrap();
    lab.netpath_ok(&["run", "-d", "--name", "a", "--network", "n1"]).unwrap();

    // Pins of a newer, unknown layout: refused in one line, nothing changed.
    let marker = lab.roots.bpf.join(format!("layout-{}", map_layout::VERSION));
    assert!(marker.exists(), "the loader marks the layout");
    std::fs::remove_dir(&marker).unwrap();
    std::fs::create_dir(lab.roots.bpf.join("layout-999")).unwrap();
    let before = (pins(&lab), program_ids(&lab));
    for args in [&["system", "upgrade"][..], &["run", "-d", "--name", "b", "--network", "n1"][..]] {
        let (code, _, stderr) = output(&mut netpath_as(&lab, &new, args)).unwrap();
        assert_ne!(code, 0, "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("layout 999") && stderr.contains("netpath system reset"), "{stderr}");
        assert_eq!((pins(&lab), program_ids(&lab)), before, "{args:?} changed nothing");
    }

    // Pins from before versioning, from a build without VETHS: carried
    // over, VETHS created and filled from ENDPOINTS.
    std::fs::remove_dir(lab.roots.bpf.join("layout-999")).unwrap();
    std::fs::remove_file(lab.roots.bpf.join("maps").join(map_names::VETHS)).unwrap();
    let out = output(&mut netpath_as(&lab, &new, &["system", "upgrade"])).unwrap();
    assert_eq!(out.0, 0, "{out:?}");
    assert!(out.1.contains("new maps VETHS") && out.1.contains("before layout versioning"), "{out:?}");
    assert!(marker.exists());
    let programs = program_ids(&lab);
    let links = lab.datapath().link_programs().unwrap();
    assert!(links.iter().any(|(l, _)| l.ends_with(program_names::XDP_FROM_UPLINK)), "{links:?}");
    for (link, id) in &links {
        let program = link.rsplit_once('@').unwrap().1;
        assert_eq!(*id, programs.iter().find(|(n, _)| *n == program).unwrap().1, "{link} runs the new {program}");
    }
    // A sandbox made before the upgrade talks (ARP included, which is
    // checked against VETHS) to one made after.
    let (code, _, stderr) =
        output(&mut netpath_as(&lab, &new, &["run", "-d", "--name", "b", "--network", "n1"])).unwrap();
    assert_eq!(code, 0, "{stderr}");
    let ping = output(lab.sandbox_cmd("a", "ping").unwrap().args(["-c", "2", "-i", "0.2", "-W", "1", "10.61.0.3"]));
    assert_eq!(ping.unwrap().0, 0, "a reaches b after the migration");
}
