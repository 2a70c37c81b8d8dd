//! Name resolution on user-defined networks, like Docker's embedded DNS and
//! Podman's aardvark-dns: a resolver netpath starts on its own when a
//! user-defined network has members, listening on each such network's
//! gateway, answering sandbox names and aliases of that network and
//! forwarding the rest upstream.
pub mod server;

use std::{path::PathBuf, process::Stdio};

use anyhow::{Context, Result};

use crate::{host::Host, paths::Roots, state::State};

fn pid_file(roots: &Roots) -> PathBuf {
    roots.run.join("dns.pid")
}

/// Whether any user-defined network has members, which is when the
/// resolver must run.
pub fn needed(state: &State) -> bool {
    state.networks.values().any(|n| n.has_resolver() && state.attachments_on(&n.name).next().is_some())
}

/// The resolver's PID, if it runs.
pub fn running(roots: &Roots) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(roots)).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = String::from_utf8_lossy(&cmdline).contains("dns-serve");
    ours.then_some(pid)
}

/// Starts or stops the resolver to match `state`.
pub fn ensure(host: &Host, state: &State) -> Result<()> {
    let roots = &host.roots;
    match (needed(state), running(roots)) {
        (true, None) => start(roots),
        (false, Some(pid)) => {
            stop_pid(pid);
            let _ = std::fs::remove_file(pid_file(roots));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Stops the resolver if it runs.
pub fn stop(roots: &Roots) {
    if let Some(pid) = running(roots) {
        stop_pid(pid);
    }
    let _ = std::fs::remove_file(pid_file(roots));
}

fn stop_pid(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
}

fn start(roots: &Roots) -> Result<()> {
    std::fs::create_dir_all(&roots.run)?;
    let log = std::fs::File::create(roots.run.join("dns.log")).context("creating the resolver log")?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("dns-serve").stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    for (k, v) in roots.env() {
        cmd.env(k, v);
    }
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid().map(|_| ()).map_err(Into::into)
        });
    }
    let child = cmd.spawn().context("starting the resolver")?;
    std::fs::write(pid_file(roots), child.id().to_string())?;
    Ok(())
}
