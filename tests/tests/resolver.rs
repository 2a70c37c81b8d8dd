//! The resolver's life: a supervisor and the resolver it forks (one
//! thread), the resolver forked again after `kill -9`, the supervisor
//! restarted by the next netpath command after `kill -9`, both gone with the
//! last member of the last user-defined network.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use netpath_tests::{At, Lab, lab, output, probe, words};
use serde_json::Value;

const GATEWAY: &str = "10.71.0.1";

fn pid_file(lab: &Lab) -> PathBuf {
    lab.roots.run.join("dns.pid")
}

fn recorded_pid(lab: &Lab) -> Option<i32> {
    std::fs::read_to_string(pid_file(lab)).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live `dns-serve` (a zombie's command line is empty).
fn is_resolver(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("dns-serve"))
}

/// Waits (bounded) for `pid` to stop being a resolver; panics if it does not.
fn wait_gone(pid: i32) {
    for _ in 0..200 {
        if !is_resolver(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("resolver {pid} still runs");
}

/// The resolver the supervisor `pid` forked (its only child), waiting
/// (bounded) for it to be there.
fn worker_of(pid: i32) -> i32 {
    for _ in 0..200 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("supervisor {pid} has no resolver");
}

fn kill_9(pid: i32) {
    let (code, ..) = output(std::process::Command::new("kill").args(["-9", &pid.to_string()])).unwrap();
    assert_eq!(code, 0);
}

/// `lab dig` from sandbox `from` straight at the gateway: (exit code, parsed answer).
fn dig(lab: &Lab, from: &str, name: &str, tcp: bool) -> (i32, Option<Value>) {
    let line = format!("dig --name {name} --server {GATEWAY}");
    let mut args = words(&line);
    if tcp {
        args.push("--tcp");
    }
    let (code, out, _) = output(&mut probe(lab, At::Sandbox(from), &args)).unwrap();
    (code, serde_json::from_str(out.trim()).ok())
}

fn answers(v: &Value) -> Vec<String> {
    v["answers"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn resolves(lab: &Lab, from: &str, name: &str, tcp: bool) -> Vec<String> {
    let (code, v) = dig(lab, from, name, tcp);
    assert_eq!(code, 0, "dig {name} from {from}");
    answers(&v.unwrap())
}

#[test]
fn kill_9_resolver_comes_back_with_the_next_command() {
    let lab = lab("resolver-kill");
    lab.netpath_ok(&words("network create r --subnet 10.71.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name a1 --network r --network-alias alpha")).unwrap();
    lab.netpath_ok(&words("run -d --name a2 --network r")).unwrap();
    assert_eq!(resolves(&lab, "a2", "alpha", false), ["10.71.0.2"]);

    let pid = recorded_pid(&lab).expect("resolver PID file");
    assert!(is_resolver(pid));
    let worker = worker_of(pid);
    // One thread serves every listener: they share one runtime.
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    assert!(status.lines().any(|l| l.split_whitespace().eq(["Threads:", "1"])), "{status}");

    // The supervisor (the PID file's process) goes, and its resolver with it.
    kill_9(pid);
    wait_gone(pid);
    wait_gone(worker);
    // Down: nothing listens on the gateway (TCP is refused at once).
    let (code, _) = dig(&lab, "a2", "a1", true);
    assert_ne!(code, 0, "nothing answers while the resolver is dead");

    // Any command brings it back.
    lab.netpath_ok(&["ps"]).unwrap();
    let revived = Instant::now();
    let new_pid = recorded_pid(&lab).expect("PID file after ps");
    assert_ne!(new_pid, pid);
    assert!(is_resolver(new_pid), "ps restarted the resolver");
    // Names resolve again within 2 s of that command (the issue's bound).
    let mut answer = None;
    for _ in 0..20 {
        if let (0, Some(v)) = dig(&lab, "a2", "a1", true) {
            answer = Some(v);
            break;
        }
        assert!(revived.elapsed() < Duration::from_secs(2), "no answer within 2 s of ps");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(revived.elapsed() < Duration::from_secs(2), "no answer within 2 s of ps");
    assert_eq!(answers(&answer.expect("an answer over TCP")), ["10.71.0.2"]);
    assert_eq!(resolves(&lab, "a2", "alpha", false), ["10.71.0.2"], "and over UDP");

    // The new process follows the state as the old one did: a sandbox
    // resolves as soon as `run` returns, one removed stops resolving.
    lab.netpath_ok(&words("run -d --name a3 --network r")).unwrap();
    assert_eq!(resolves(&lab, "a3", "a1", false), ["10.71.0.2"]);
    assert_eq!(resolves(&lab, "a1", "a3", false), ["10.71.0.4"]);
    lab.netpath_ok(&words("rm -f a3")).unwrap();
    assert!(resolves(&lab, "a1", "a3", false).is_empty());
    assert_eq!(recorded_pid(&lab), Some(new_pid), "one resolver all along");
}

#[test]
fn kill_9_of_the_resolver_proper_heals_by_itself() {
    let lab = lab("resolver-heal");
    lab.netpath_ok(&words("network create r --subnet 10.71.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name a1 --network r")).unwrap();
    lab.netpath_ok(&words("run -d --name a2 --network r")).unwrap();
    let pid = recorded_pid(&lab).unwrap();
    let worker = worker_of(pid);
    kill_9(worker);
    wait_gone(worker);
    let killed = Instant::now();
    // No netpath command: the supervisor forks a new resolver; names
    // resolve again within 2 s.
    let mut answer = None;
    for _ in 0..20 {
        if let (0, Some(v)) = dig(&lab, "a2", "a1", true) {
            answer = Some(v);
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(2), "no answer within 2 s of the kill");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(killed.elapsed() < Duration::from_secs(2), "no answer within 2 s of the kill");
    assert_eq!(answers(&answer.expect("an answer over TCP")), ["10.71.0.2"]);
    assert_eq!(recorded_pid(&lab), Some(pid), "same supervisor");
    assert_ne!(worker_of(pid), worker, "a new resolver");
}

#[test]
fn resolver_stops_with_the_last_member_and_network() {
    let lab = lab("resolver-stop");
    lab.netpath_ok(&words("network create r --subnet 10.71.0.0/24")).unwrap();
    assert_eq!(recorded_pid(&lab), None, "no member, no resolver");
    lab.netpath_ok(&words("run -d --name s1 --network r")).unwrap();
    let first = recorded_pid(&lab).expect("resolver for the first member");
    assert!(is_resolver(first));
    let first_worker = worker_of(first);
    lab.netpath_ok(&words("rm -f s1")).unwrap();
    wait_gone(first);
    wait_gone(first_worker);
    assert!(!pid_file(&lab).exists());
    // Not needed, so no command revives it.
    lab.netpath_ok(&["ps"]).unwrap();
    assert!(!pid_file(&lab).exists());

    // A member again, then the network goes (after its last member).
    lab.netpath_ok(&words("run -d --name s2 --network r")).unwrap();
    let second = recorded_pid(&lab).expect("resolver for the new member");
    assert!(is_resolver(second) && second != first);
    let second_worker = worker_of(second);
    assert_eq!(resolves(&lab, "s2", "s2", false), ["10.71.0.2"]);
    lab.netpath_ok(&words("network disconnect r s2")).unwrap();
    wait_gone(second);
    wait_gone(second_worker);
    assert!(!pid_file(&lab).exists());
    lab.netpath_ok(&words("network rm r")).unwrap();
    lab.netpath_ok(&["ps"]).unwrap();
    assert!(!pid_file(&lab).exists());
}

#[test]
fn config_change_reaches_the_running_resolver() {
    let lab = lab("resolver-config");
    // An upstream inside the lab that nobody answers at, at first.
    lab.configure(r#"{"dns": ["198.18.0.77"]}"#).unwrap();
    let (mut stub, _) = netpath_lab::probes::start_sink(probe(
        &lab,
        At::Outside,
        &words("dns-stub --name upstream.test --addr 198.18.0.99"),
    ))
    .unwrap();
    lab.netpath_ok(&words("network create r --subnet 10.71.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name c1 --network r")).unwrap();
    let pid = recorded_pid(&lab).unwrap();
    let (code, v) = dig(&lab, "c1", "upstream.test", false);
    assert_eq!(code, 0);
    let v = v.unwrap();
    assert_eq!(v["rcode"], "Server Failure", "the silent upstream: {v}");
    // The config now names the stub: the same process forwards there.
    lab.configure(r#"{"dns": ["198.18.0.1"]}"#).unwrap();
    assert_eq!(resolves(&lab, "c1", "upstream.test", false), ["198.18.0.99"]);
    assert_eq!(recorded_pid(&lab), Some(pid), "reloaded, not restarted");
    // SIGHUP to the PID file's process reloads by hand; it ends nothing.
    let worker = worker_of(pid);
    let (code, ..) = output(std::process::Command::new("kill").args(["-HUP", &pid.to_string()])).unwrap();
    assert_eq!(code, 0);
    assert_eq!(resolves(&lab, "c1", "upstream.test", false), ["198.18.0.99"]);
    assert!(is_resolver(pid) && is_resolver(worker));
    assert_eq!(worker_of(pid), worker);
    let _ = stub.kill();
    let _ = stub.wait();
}
