//! A crash never leaks and never hands over. `kill -9` of `run` (2,000
//! published ports) at 20 moments spread over its measured duration, and of
//! `rm`, `network create` and `network rm`: after the next command (or
//! `system check --repair`) the kernel and the disk hold exactly what the
//! state says, the same name and address work again, and no port the killed
//! run published reaches anyone (checked at a server in the sandbox that got
//! the address next). `system reset` with the state file deleted, and with
//! garbage in it, leaves no link, namespace file, mount, pin or process.
use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use netpath_lab::fixture::{HOST_UPLINK, HOST_UPLINK_IP};
use netpath_tests::{At, Lab, lab, output, probe, words};
use serde_json::Value;

const PORTS: u16 = 2000;
const FIRST_PORT: u16 = 20000;
const KILL_MOMENTS: u32 = 20;

fn state(lab: &Lab) -> Value {
    match std::fs::read(lab.roots.state_file()) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => serde_json::json!({"networks": {}, "sandboxes": {}}),
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into()).collect()
}

/// Mount points under the lab's own directories (namespace bind mounts).
fn lab_mounts(lab: &Lab) -> Vec<String> {
    let base = lab.roots.run.parent().unwrap().to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&base))
        .collect()
}

/// Everything of the instance in the kernel and on disk is what the state
/// owns: namespace files and mounts, host devices, link pins, endpoint and
/// published-port entries.
fn assert_only_owned(lab: &Lab, when: &str) {
    let st = state(lab);
    let sandboxes = st["sandboxes"].as_object().unwrap();
    let networks = st["networks"].as_object().unwrap();
    let names: BTreeSet<String> = sandboxes.keys().cloned().collect();
    assert_eq!(names_in(&lab.roots.netns_dir()), names, "{when}: namespace files");
    assert_eq!(names_in(&lab.roots.uts_dir()), names, "{when}: UTS namespace files");
    assert_eq!(lab_mounts(lab).len(), 2 * names.len(), "{when}: mounts {:?}", lab_mounts(lab));
    let atts: Vec<&Value> = sandboxes.values().flat_map(|s| s["attachments"].as_array().unwrap()).collect();
    let veths: BTreeSet<String> = atts.iter().map(|a| a["host_ifname"].as_str().unwrap().to_string()).collect();
    let mut expected: BTreeSet<String> = veths.clone();
    expected.extend(networks.values().map(|n| n["bridge"].as_str().unwrap().to_string()));
    expected.extend(["lo".to_string(), HOST_UPLINK.to_string()]);
    let links: BTreeSet<String> = lab.in_host(|r| r.link_names()).unwrap().into_iter().collect();
    assert_eq!(links, expected, "{when}: host links");
    for pin in names_in(&lab.roots.bpf.join("links")) {
        let ifname = pin.split('@').next().unwrap();
        assert!(ifname == HOST_UPLINK || ifname == "cgroup" || veths.contains(ifname), "{when}: stray pin {pin}");
    }
    if lab.datapath().is_loaded() {
        let ips: BTreeSet<[u8; 4]> =
            atts.iter().map(|a| a["ip"].as_str().unwrap().parse::<std::net::Ipv4Addr>().unwrap().octets()).collect();
        let endpoints: BTreeSet<[u8; 4]> =
            lab.datapath().endpoints().unwrap().keys().flatten().map(|k| k.ipv4).collect();
        assert_eq!(endpoints, ips, "{when}: endpoint entries");
        let ports: usize = sandboxes.values().map(|s| s["published"].as_array().unwrap().len()).sum();
        assert_eq!(lab.datapath().published().unwrap().keys().count(), ports, "{when}: published entries");
    }
}

/// `run -d --name k` on n1 at 10.41.0.10 with 2,000 single published ports.
fn big_run() -> Vec<String> {
    let mut args: Vec<String> =
        words("run -d --name k --network n1 --ip 10.41.0.10").iter().map(|s| s.to_string()).collect();
    for p in FIRST_PORT..FIRST_PORT + PORTS {
        args.push("-p".into());
        args.push(format!("{p}:80"));
    }
    args
}

/// Starts `args` and kills it with SIGKILL after `delay`.
fn kill_after(lab: &Lab, args: &[String], delay: Duration) {
    let mut child = lab
        .netpath(args)
        .unwrap()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap();
}

fn timed(lab: &Lab, args: &[String]) -> Duration {
    let t = Instant::now();
    lab.netpath_ok(args).unwrap();
    t.elapsed()
}

/// The address and name work again, and none of `stray` host ports leads
/// to the sandbox that now has the address: a server there sees exactly the
/// one connection made to its own published port.
fn assert_nothing_handed_over(lab: &Lab, stray: &[u16]) {
    lab.netpath_ok(&words("run -d --name k --network n1 --ip 10.41.0.10 -p 30000:80")).unwrap();
    let serve = probe(lab, At::Sandbox("k"), &["tcp-serve", "--port", "80", "--max", "1", "--timeout", "20"]);
    let (mut server, mut out) = netpath_lab::probes::start_sink(serve).unwrap();
    let churn = |port: u16| -> Value {
        let to = format!("{HOST_UPLINK_IP}:{port}");
        let (code, stdout, stderr) =
            output(&mut probe(lab, At::Outside, &["tcp-churn", "--to", &to, "--count", "1"])).unwrap();
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(stdout.trim()).unwrap()
    };
    for &port in stray {
        assert_eq!(churn(port)["ok"], 0, "port {port} of the killed run still leads somewhere");
    }
    assert_eq!(churn(30000)["ok"], 1, "the new sandbox's own port");
    let mut report = String::new();
    std::io::Read::read_to_string(&mut out, &mut report).unwrap();
    assert!(server.wait().unwrap().success());
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["served"], 1, "{report}");
    lab.netpath_ok(&["rm", "-f", "k"]).unwrap();
}

#[test]
fn killed_run_leaves_nothing_and_hands_nothing_over() {
    let started = Instant::now();
    let lab = lab("crash-run");
    lab.netpath_ok(&words("network create n1 --subnet 10.41.0.0/24")).unwrap();
    // A neighbour that must keep working throughout.
    lab.netpath_ok(&words("run -d --name keep --network n1 -p 8080:80")).unwrap();
    let args = big_run();
    let full = timed(&lab, &args);
    lab.netpath_ok(&["rm", "-f", "k"]).unwrap();
    let stray = [FIRST_PORT, FIRST_PORT + PORTS / 2, FIRST_PORT + PORTS - 1];
    let mut outcomes = Vec::new();
    for i in 0..KILL_MOMENTS {
        let delay = full * i / KILL_MOMENTS;
        kill_after(&lab, &args, delay);
        // The next command, whatever it is, settles the interrupted run.
        let (code, _, stderr) = output(&mut lab.netpath(&["ps"]).unwrap()).unwrap();
        assert_eq!(code, 0, "{stderr}");
        let when = format!("kill at {delay:?} of {full:?}");
        assert_only_owned(&lab, &when);
        let completed = state(&lab)["sandboxes"].get("k").is_some();
        outcomes.push(if completed {
            "completed"
        } else if stderr.contains("rolled back") {
            "rolled back"
        } else {
            "not started"
        });
        if completed {
            lab.netpath_ok(&["rm", "-f", "k"]).unwrap();
            assert_only_owned(&lab, &format!("{when}, removed"));
        }
        assert_nothing_handed_over(&lab, &stray);
    }
    assert_only_owned(&lab, "the end");
    assert!(state(&lab)["sandboxes"].get("keep").is_some());
    eprintln!(
        "run of {PORTS} ports took {full:?}; outcomes of the kills: {outcomes:?}; test took {:?}",
        started.elapsed()
    );
    // The kills must have hit the run in the middle at least once.
    assert!(outcomes.contains(&"rolled back"), "{outcomes:?}");
}

#[test]
fn killed_rm_and_network_commands_are_finished_or_rolled_back() {
    let started = Instant::now();
    let lab = lab("crash-other");
    lab.netpath_ok(&words("network create n1 --subnet 10.41.0.0/24")).unwrap();
    let args = big_run();
    lab.netpath_ok(&args).unwrap();
    let rm: Vec<String> = words("rm -f k").iter().map(|s| s.to_string()).collect();
    let rm_time = timed(&lab, &rm);
    for i in 0..5 {
        lab.netpath_ok(&args).unwrap();
        kill_after(&lab, &rm, rm_time * i / 5);
        lab.netpath_ok(&["system", "check", "--repair"]).unwrap();
        assert_only_owned(&lab, &format!("rm killed at {i}/5"));
        let k = state(&lab)["sandboxes"].get("k").cloned();
        if k.is_some() {
            lab.netpath_ok(&rm).unwrap();
        }
        assert_nothing_handed_over(&lab, &[FIRST_PORT]);
    }

    let create: Vec<String> = words("network create n2 --subnet 10.42.0.0/24").iter().map(|s| s.to_string()).collect();
    let remove: Vec<String> = words("network rm n2").iter().map(|s| s.to_string()).collect();
    let create_time = timed(&lab, &create);
    let remove_time = timed(&lab, &remove);
    for i in 0..5 {
        kill_after(&lab, &create, create_time * i / 5);
        lab.netpath_ok(&["network", "ls"]).unwrap();
        assert_only_owned(&lab, &format!("network create killed at {i}/5"));
        if state(&lab)["networks"].get("n2").is_none() {
            lab.netpath_ok(&create).unwrap();
        }
        kill_after(&lab, &remove, remove_time * i / 5);
        lab.netpath_ok(&["network", "ls"]).unwrap();
        assert_only_owned(&lab, &format!("network rm killed at {i}/5"));
        if state(&lab)["networks"].get("n2").is_some() {
            lab.netpath_ok(&remove).unwrap();
        }
        // The same subnet and name work again.
        lab.netpath_ok(&create).unwrap();
        lab.netpath_ok(&words("run -d --name t --network n2")).unwrap();
        lab.netpath_ok(&["rm", "-f", "t"]).unwrap();
        lab.netpath_ok(&remove).unwrap();
        assert_only_owned(&lab, &format!("round {i}"));
    }
    let (code, out, _) = output(&mut lab.netpath(&["system", "check"]).unwrap()).unwrap();
    assert_eq!((code, out.as_str()), (0, ""), "nothing left to repair");
    eprintln!(
        "rm took {rm_time:?}, network create {create_time:?}, network rm {remove_time:?}; test took {:?}",
        started.elapsed()
    );
}

/// Builds two networks, sandboxes with published ports and a detached
/// command; returns the PIDs of the detached command and of the resolver.
fn populate(lab: &Lab) -> [i32; 2] {
    lab.netpath_ok(&words("network create n1 --subnet 10.43.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name a --network n1 -p 8081:80 -- sleep 600")).unwrap();
    lab.netpath_ok(&words("run -d --name bob -p 8082:80")).unwrap();
    lab.netpath_ok(&words("run -d --name c --network none")).unwrap();
    let resolver = std::fs::read_to_string(lab.roots.run.join("dns.pid")).unwrap().trim().parse().unwrap();
    [state(lab)["sandboxes"]["a"]["pid"].as_i64().unwrap() as i32, resolver]
}

/// Nothing of the instance is left: only the lab's own devices, no
/// namespace file, mount, pin or process.
fn assert_all_gone(lab: &Lab, pids: [i32; 2]) {
    let links: BTreeSet<String> = lab.in_host(|r| r.link_names()).unwrap().into_iter().collect();
    assert_eq!(links, BTreeSet::from(["lo".to_string(), HOST_UPLINK.to_string()]));
    assert!(names_in(&lab.roots.netns_dir()).is_empty() && names_in(&lab.roots.uts_dir()).is_empty());
    assert!(lab_mounts(lab).is_empty(), "{:?}", lab_mounts(lab));
    assert!(!lab.roots.bpf.exists(), "pins left");
    for pid in pids {
        // A SIGTERMed resolver leaves on its own: bounded wait for its exit.
        let gone = || !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid);
        for _ in 0..100 {
            if gone() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone(), "process {pid} still runs");
    }
    assert!(names_in(&lab.roots.run.join("sandboxes")).is_empty());
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
}

#[test]
fn reset_without_a_readable_state_leaves_nothing() {
    let lab = lab("crash-reset");
    let pids = populate(&lab);
    std::fs::remove_file(lab.roots.state_file()).unwrap();
    let (code, _, stderr) = output(&mut lab.netpath(&["system", "reset"]).unwrap()).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_all_gone(&lab, pids);

    let pids = populate(&lab);
    std::fs::write(lab.roots.state_file(), b"{\"networks\": garbage").unwrap();
    // Other commands refuse, changing nothing, and say what to do.
    let (code, _, stderr) = output(&mut lab.netpath(&["ps"]).unwrap()).unwrap();
    assert_ne!(code, 0);
    assert!(stderr.contains("unreadable") && stderr.contains("system reset"), "{stderr}");
    let (code, _, stderr) = output(&mut lab.netpath(&["system", "reset"]).unwrap()).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("kept as"), "{stderr}");
    assert_all_gone(&lab, pids);
    let kept: Vec<String> =
        names_in(&lab.roots.state).into_iter().filter(|n| n.starts_with("state.json.unreadable-")).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(lab.roots.state.join(&kept[0])).unwrap(), b"{\"networks\": garbage");
    // And the instance works again.
    lab.netpath_ok(&words("run -d --name again -p 8081:80")).unwrap();
    lab.netpath_ok(&["system", "reset"]).unwrap();
}

#[test]
fn rm_f_takes_what_a_lost_record_left() {
    let lab = lab("crash-orphan");
    populate(&lab);
    let before = state(&lab);
    // The state forgets `bob` (as a crash of an older netpath could leave it).
    // (Not a one-letter name: `rm` resolves ID prefixes as Docker does, and
    // `b` may begin another sandbox's ID.)
    let mut forgotten = before.clone();
    forgotten["sandboxes"].as_object_mut().unwrap().remove("bob");
    std::fs::write(lab.roots.state_file(), serde_json::to_vec(&forgotten).unwrap()).unwrap();
    let (code, out, stderr) = output(&mut lab.netpath(&["rm", "-f", "bob"]).unwrap()).unwrap();
    assert_eq!((code, out.trim()), (0, "bob"), "{stderr}");
    assert!(!lab.roots.netns_dir().join("bob").exists());
    let (code, _, stderr) = output(&mut lab.netpath(&["rm", "-f", "nosuch"]).unwrap()).unwrap();
    assert!(code != 0 && stderr.contains("No such container: nosuch"), "{stderr}");
    // What is left of b (its TCX pin, its map entries) goes with check --repair.
    let (code, report, _) = output(&mut lab.netpath(&["system", "check"]).unwrap()).unwrap();
    assert_eq!(code, 1, "{report}");
    lab.netpath_ok(&["system", "check", "--repair"]).unwrap();
    assert_only_owned(&lab, "after repair");
    // b's address and port work again.
    let ip = before["sandboxes"]["bob"]["attachments"][0]["ip"].as_str().unwrap().to_string();
    // (`--ip` is for user-defined networks only, as in Docker: the default
    // network hands out its lowest free address, which is b's again.)
    lab.netpath_ok(&["run", "-d", "--name", "bob", "-p", "8082:80"]).unwrap();
    assert_eq!(state(&lab)["sandboxes"]["bob"]["attachments"][0]["ip"].as_str().unwrap(), ip);
}
