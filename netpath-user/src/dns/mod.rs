//! Name resolution on user-defined networks, like Docker's embedded DNS and
//! Podman's aardvark-dns: a resolver netpath starts on its own when a
//! user-defined network has members, listening on each such network's
//! gateway, answering sandbox names and aliases of that network and
//! forwarding the rest upstream.
//!
//! Supervision, two levels: `dns-serve` is a tiny supervisor that forks the
//! resolver proper and forks it again when it is killed, so names come back
//! by themselves. The supervisor's PID file exists exactly while the
//! resolver is meant to run (an orderly stop, or the resolver leaving on its
//! own, removes it); a PID file whose process is gone therefore means the
//! supervisor died (`kill -9`, a crash, taking the resolver with it), and
//! the next netpath command of any kind starts it again ([`revive`]).
//! Start, stop and revive hold the resolver's lock, so two commands never
//! start two resolvers.
mod handler;
pub mod server;
mod view;

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{Context, Result};

use crate::{background::Background, host::Host, paths::Roots, state::State};

/// The resolver's process: hidden subcommand, files in the run directory.
const RESOLVER: Background = Background { subcommand: "dns-serve", file_stem: "dns", what: "resolver" };

/// The resolver's PID, if it runs.
pub fn running(roots: &Roots) -> Option<i32> {
    RESOLVER.running(roots)
}

/// Whether any user-defined network has members, which is when the
/// resolver must run.
pub fn needed(state: &State) -> bool {
    state.networks.values().any(|n| n.has_resolver() && state.attachments_on(&n.name).next().is_some())
}

/// Starts or stops the resolver to match `state`.
pub fn ensure(host: &Host, state: &State) -> Result<()> {
    let roots = &host.roots;
    let _lock = RESOLVER.lock(roots)?;
    match (needed(state), RESOLVER.running(roots)) {
        (true, None) => start(roots),
        (false, Some(pid)) => {
            stop_pid(pid);
            RESOLVER.remove_pid_file(roots);
            Ok(())
        }
        (false, None) => {
            // A resolver that died while it was no longer needed.
            RESOLVER.remove_pid_file(roots);
            Ok(())
        }
        (true, Some(_)) => Ok(()),
    }
}

/// Stops the resolver if it runs.
pub fn stop(roots: &Roots) {
    let _lock = RESOLVER.lock(roots);
    if let Some(pid) = RESOLVER.running(roots) {
        stop_pid(pid);
    }
    RESOLVER.remove_pid_file(roots);
}

/// Starts the resolver again if it died while it was meant to run. Cheap
/// when nothing died: a read of the PID file and of the process's command
/// line, no lock.
pub fn revive(roots: &Roots) -> Result<()> {
    match RESOLVER.recorded_pid(roots) {
        None => return Ok(()),
        Some(pid) if RESOLVER.is_ours(pid, roots) => return Ok(()),
        Some(_) => {}
    }
    let _lock = RESOLVER.lock(roots)?;
    // Checked again under the lock: a command may have stopped or
    // restarted it meanwhile.
    match RESOLVER.recorded_pid(roots) {
        Some(pid) if !RESOLVER.is_ours(pid, roots) => start(roots).context("restarting the resolver"),
        _ => Ok(()),
    }
}

/// Called by the resolver when it leaves on its own (no user-defined
/// network left): the PID file goes, so that nothing revives it.
pub(crate) fn forget(roots: &Roots, own_pid: i32) {
    let Ok(_lock) = RESOLVER.lock(roots) else { return };
    if RESOLVER.recorded_pid(roots) == Some(own_pid) {
        RESOLVER.remove_pid_file(roots);
    }
}

/// Signals the resolver's process group: the supervisor and the resolver
/// it forked (see `server::serve`).
fn stop_pid(pid: i32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
}

fn start(roots: &Roots) -> Result<()> {
    let log = File::create(roots.run.join("dns.log")).context("creating the resolver log")?;
    let mut cmd = RESOLVER.command(roots, log)?;
    // The resolver says on this pipe when it listens, so that the command
    // that started it (a `run`) returns only then: a sandbox's first
    // question must not meet a closed port.
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let ready_fd = ready_write.as_raw_fd();
    cmd.env(READY_FD_ENV, ready_fd.to_string());
    // SAFETY: fcntl is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // The write end is the one descriptor the resolver inherits.
            if libc::fcntl(ready_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting the resolver")?;
    drop(ready_write);
    RESOLVER.write_pid_file(roots, child.id())?;
    wait_ready(ready_read);
    Ok(())
}

/// The variable naming the descriptor the resolver signals readiness on.
const READY_FD_ENV: &str = "NETPATH_DNS_READY_FD";

/// Waits (bounded) for the resolver's "listening" byte; end of file (it
/// died or had nothing to serve) or the time limit end the wait too: a
/// resolver that is late is still supervised and revived as before.
fn wait_ready(ready: std::os::fd::OwnedFd) {
    let mut poll = libc::pollfd { fd: ready.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, for the call's duration.
    let _ = unsafe { libc::poll(&mut poll, 1, 5_000) };
}

/// The readiness descriptor `start` handed down, taken once (by the
/// supervisor, for its first resolver).
pub(crate) fn take_ready_fd() -> Option<std::os::fd::OwnedFd> {
    let fd: std::os::fd::RawFd = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: single-threaded at this point (the supervisor before its
    // first fork).
    unsafe { std::env::remove_var(READY_FD_ENV) };
    // SAFETY: `start` passed this descriptor open and to this process alone.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
