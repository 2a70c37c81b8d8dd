//! The agent process, started and stopped by netpath itself as the
//! resolver is (see `dns`): it runs exactly while daemon.json names a
//! cluster store. Every netpath command checks, cheaply (a PID file and a
//! command line), that it runs when it should and starts it when it does
//! not (it was killed, crashed, or the config just gained the store), and
//! stops it when the store left the config. Start and stop hold a lock so
//! two commands never start two agents. Stopping is not leaving: the lease
//! lives on until its TTL (a restarted agent resumes it); `system reset`
//! leaves for real, revoking the lease with every record bound to it.
use std::{
    fs::File,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{
    Cluster, HostRecord, Membership, Sink,
    agent::{Agent, AgentConfig, Evict, Files, StateEndpoints, Status, host_id},
};
use crate::{background::Background, config::Config, paths::Roots};

/// The hidden subcommand that runs the agent.
pub const SUBCOMMAND: &str = "agent";

/// The agent's process: hidden subcommand, files in the run directory.
const AGENT: Background = Background { subcommand: SUBCOMMAND, file_stem: "agent", what: "agent" };

/// The agent's PID, if it runs.
pub fn running(roots: &Roots) -> Option<i32> {
    AGENT.running(roots)
}

/// Starts or stops the agent to match the config. Cheap when nothing is
/// to do: no lock, no store access.
pub fn ensure(roots: &Roots) -> Result<()> {
    // A daemon.json that cannot be read says nothing about the store: the
    // agent is left as it is (stopping it would let this host's lease, and
    // every record bound to it, expire across the cluster).
    let wanted = crate::config::load_cluster(&roots.config)
        .context("the cluster agent follows daemon.json, which cannot be read")?
        .is_some();
    if wanted == AGENT.running(roots).is_some() {
        return Ok(());
    }
    let _lock = AGENT.lock(roots)?;
    match (wanted, AGENT.running(roots)) {
        (true, None) => start(roots),
        (false, Some(pid)) => {
            stop_pid(pid);
            AGENT.remove_pid_file(roots);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn start(roots: &Roots) -> Result<()> {
    let log =
        File::options().create(true).append(true).open(roots.run.join("agent.log")).context("opening the agent log")?;
    let child = AGENT.command(roots, log)?.spawn().context("starting the cluster agent")?;
    AGENT.write_pid_file(roots, child.id())
}

/// SIGTERM, and up to three seconds for it to go (it finishes the request
/// in flight, never more than one store deadline).
fn stop_pid(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..60 {
        if nix::sys::signal::kill(pid, None).is_err() {
            return;
        }
        // Our own child (started by this very command) must be reaped.
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Stops the agent; with `leave`, also revokes this host's lease, so every
/// record bound to it (host, blocks, endpoints) goes from the store now.
/// A store that cannot be reached is reported, not fatal: the lease then
/// runs out by itself within its TTL.
pub fn stop(roots: &Roots, leave: bool) -> Result<()> {
    {
        let _lock = AGENT.lock(roots)?;
        if let Some(pid) = AGENT.running(roots) {
            stop_pid(pid);
        }
        AGENT.remove_pid_file(roots);
    }
    let files = Files::of(roots);
    if !leave {
        return Ok(());
    }
    let _ = std::fs::remove_file(&files.remote);
    let _ = std::fs::remove_file(&files.status);
    let Some(m) = Membership::load(&files.membership) else { return Ok(()) };
    let _ = std::fs::remove_file(&files.membership);
    let _ = std::fs::remove_file(super::lease::membership_lock(&files.membership));
    let store = crate::config::load_cluster(&roots.config).ok().flatten().map(|c| c.store);
    let Some(store) = store else { return Ok(()) };
    Cluster::connect(&store).and_then(|c| c.leave(&m)).context("leaving the cluster")
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `netpath agent`: runs until SIGTERM/SIGINT, or until the config no
/// longer names a store.
/// `sink` builds the data path's side and `evict` disconnects a sandbox
/// (given by the caller, so that this module does not depend on the
/// overlay driver's, which depends on it).
pub fn serve(roots: Roots, sink: fn(&Roots, &HostRecord) -> Box<dyn Sink>, evict: Evict) -> Result<i32> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_stop), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }.context("installing the stop handler")?;
    }
    let Some(cluster) = crate::config::load_cluster(&roots.config)? else {
        eprintln!("agent: no cluster-store in {}; nothing to do", roots.config.display());
        return Ok(0);
    };
    let files = Files::of(&roots);
    let host = HostRecord { id: host_id(&files.host_id)?, vtep: cluster.advertise };
    eprintln!("agent: host {} (VTEP {}) following {}", host.id, host.vtep, cluster.store.join(","));
    let config = AgentConfig { store: cluster.store, host, ttl: cluster.lease_ttl, files };
    let sink = sink(&roots, &config.host);
    let mut agent = Agent::new(config, sink, StateEndpoints { roots: roots.clone(), evict });
    agent.run(&STOP);
    eprintln!("agent: stopped");
    Ok(0)
}

/// `netpath info`'s "Cluster" section: the store, this host's ID and VTEP,
/// the agent and its lease as it last reported them.
pub fn info(roots: &Roots, config: &Config) -> Value {
    let Some(cluster) = &config.cluster else {
        return json!({"Store": [], "Enabled": false});
    };
    let files = Files::of(roots);
    let id = std::fs::read_to_string(&files.host_id).map(|s| s.trim().to_string()).unwrap_or_default();
    let status: Option<Status> = std::fs::read(&files.status).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let agent = AGENT.running(roots);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let lease = match &status {
        None => "unknown (the agent has not reported yet)".to_string(),
        Some(s) if s.error.is_some() => format!("not renewed: {}", s.error.as_deref().unwrap_or_default()),
        Some(s) if s.lease == 0 => "none".into(),
        Some(s) => {
            let ago = now.saturating_sub(s.renewed_at);
            if agent.is_some() && ago <= s.ttl_s {
                format!("alive, renewed {ago}s ago (lease TTL {}s)", s.ttl_s)
            } else {
                format!("last renewed {ago}s ago (lease TTL {}s): expired unless renewed", s.ttl_s)
            }
        }
    };
    json!({
        "Enabled": true,
        "Store": cluster.store,
        "HostID": id,
        "VTEP": cluster.advertise.to_string(),
        "LeaseTTL": cluster.lease_ttl.as_secs(),
        "Agent": {"Running": agent.is_some(), "Pid": agent.unwrap_or(0)},
        "Lease": status.as_ref().map_or(String::new(), |s| format!("{:x}", s.lease)),
        "LeaseState": lease,
        "RemoteEndpoints": status.as_ref().map_or(0, |s| s.remote_endpoints),
        "Evicted": status.as_ref().map_or(Vec::new(), |s| s.evicted.clone()),
    })
}
