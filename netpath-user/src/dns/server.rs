//! The resolver process (`netpath dns-serve`): one single-threaded tokio
//! runtime running hickory's server, with a UDP socket and a TCP listener
//! per user-defined network bound to its gateway.
//!
//! It never polls. The state and config files are watched with inotify:
//! every netpath command that changes the state replaces the state file by
//! rename, which queues a notice, and the resolver reloads its view and
//! its listeners on it (SIGHUP reloads too, for a hand-edited config).
//! Why a sandbox resolves the moment `run` returns: the notice is queued
//! before `run` exits, so the readiness of the watch reaches the runtime
//! no later than the question, and the watch is read first; a question
//! the current view cannot answer (unknown asker or name) also reads any
//! queued notice before it is forwarded. It leaves on its own when the
//! last user-defined network is gone, on SIGTERM or SIGINT.
use std::{
    collections::HashMap,
    ffi::OsString,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use hickory_server::ServerFuture;
use nix::{
    errno::Errno,
    sys::{
        inotify::{AddWatchFlags, InitFlags, Inotify},
        socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, sockopt},
    },
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::Notify,
};

use super::{handler::Gateway, view::View};
use crate::paths::Roots;

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// The current view, and how it is kept current.
pub struct Names {
    roots: Roots,
    watch: Inotify,
    /// File names (in the watched directories) whose change means reload.
    files: Vec<OsString>,
    /// (version, view); handlers take the `Arc` and let go of the lock.
    view: RwLock<(u64, Arc<View>)>,
    /// Wakes the main loop when a handler reloaded, so listeners follow.
    changed: Notify,
}

impl Names {
    /// Watches first, then reads, so no change slips between the two.
    fn open(roots: &Roots) -> Result<Names> {
        let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).context("inotify_init")?;
        // The state file is only ever renamed into place (so the lock file's
        // close on every command wakes nothing); the config may be written in
        // place or removed. Were both in one directory, the second watch's
        // mask, a superset, would replace the first.
        let mut files = Vec::new();
        watch
            .add_watch(&roots.state, AddWatchFlags::IN_MOVED_TO)
            .with_context(|| format!("watching {}", roots.state.display()))?;
        files.extend(roots.state_file().file_name().map(OsString::from));
        // The cluster agent's list of other hosts' endpoints, renamed into place beside it.
        files.push(crate::cluster::agent::REMOTE_FILE.into());
        let flags = AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_DELETE;
        if let (Some(dir), Some(name)) = (roots.config.parent(), roots.config.file_name()) {
            // No config directory: defaults, and nothing to watch.
            if watch.add_watch(dir, flags).is_ok() {
                files.push(name.into());
            }
        }
        let view = View::load(roots);
        Ok(Names { roots: roots.clone(), watch, files, view: RwLock::new((0, Arc::new(view))), changed: Notify::new() })
    }

    pub fn current(&self) -> Arc<View> {
        self.view.read().expect("view lock").1.clone()
    }

    fn version(&self) -> u64 {
        self.view.read().expect("view lock").0
    }

    fn reload(&self) {
        let view = Arc::new(View::load(&self.roots));
        let mut slot = self.view.write().expect("view lock");
        *slot = (slot.0 + 1, view);
        drop(slot);
        self.changed.notify_one();
    }

    /// Reads every queued notice without waiting; reloads if one concerns
    /// the state or config. Returns whether it reloaded.
    pub fn catch_up(&self) -> bool {
        let mut relevant = false;
        loop {
            match self.watch.read_events() {
                Ok(events) => {
                    // No name: the queue overflowed or a directory went; reload to be safe.
                    relevant |= events.iter().any(|e| e.name.as_ref().is_none_or(|n| self.files.contains(n)));
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break, // EAGAIN: nothing more queued.
            }
        }
        if relevant {
            self.reload();
        }
        relevant
    }
}

/// `netpath dns-serve`: a supervisor that forks the resolver and forks it
/// again whenever it is killed (`kill -9`, a crash), so names come back by
/// themselves. Both are one process group (the starter made it a session),
/// which is what a stop signals; the resolver dies with the supervisor
/// (parent-death signal), and a dead supervisor is the next command's to
/// restart (see `dns::revive`).
pub fn serve(roots: Roots) -> Result<i32> {
    crate::signals::install();
    install_hangup();
    let supervisor = nix::unistd::getpid();
    let mut quick_deaths = 0;
    // The starter's readiness pipe, for the first resolver only.
    let mut ready = super::take_ready_fd();
    loop {
        let born = std::time::Instant::now();
        // SAFETY: the supervisor is single-threaded (no runtime yet), so the
        // child may run anything.
        let worker = match unsafe { nix::unistd::fork() }.context("fork")? {
            nix::unistd::ForkResult::Child => std::process::exit(worker(&roots, supervisor, ready.take())),
            nix::unistd::ForkResult::Parent { child } => child,
        };
        // The resolver holds the pipe now; the starter's wait ends with its byte or its death.
        drop(ready.take());
        use nix::sys::signal::{Signal, kill};
        // A stop signalled the group before this resolver was in it.
        if crate::signals::interrupted() {
            let _ = kill(worker, Signal::SIGTERM);
        }
        let status = loop {
            match nix::sys::wait::waitpid(worker, None) {
                Err(Errno::EINTR) => {
                    // SIGHUP is for the resolver: its reload.
                    if HANGUP.swap(false, Ordering::SeqCst) {
                        let _ = kill(worker, Signal::SIGHUP);
                    }
                    continue;
                }
                other => break other.context("waiting for the resolver")?,
            }
        };
        use nix::sys::wait::WaitStatus;
        match status {
            // It left on its own (no user-defined network) or was stopped.
            WaitStatus::Exited(_, code) => {
                super::forget(&roots, supervisor.as_raw());
                return Ok(code);
            }
            WaitStatus::Signaled(_, Signal::SIGTERM | Signal::SIGINT, _) => return Ok(0),
            _ if crate::signals::interrupted() => return Ok(0),
            other => eprintln!("resolver: {other:?}; starting it again"),
        }
        // A resolver that dies as soon as it starts is left to the next command.
        quick_deaths = if born.elapsed() < Duration::from_secs(1) { quick_deaths + 1 } else { 0 };
        if quick_deaths >= 5 {
            anyhow::bail!("the resolver died 5 times in a row within a second of starting");
        }
    }
}

static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::SeqCst);
}

/// SIGHUP to the supervisor (the PID file's process) is passed on rather
/// than ending it. No SA_RESTART, so it interrupts `waitpid`.
fn install_hangup() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_hangup), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic.
    let _ = unsafe { sigaction(Signal::SIGHUP, &action) };
}

/// The resolver proper, in the forked child: returns its exit code.
fn worker(roots: &Roots, supervisor: nix::unistd::Pid, ready: Option<std::os::fd::OwnedFd>) -> i32 {
    // Dies with the supervisor; if that happened before this line, go now.
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err()
        || nix::unistd::getppid() != supervisor
    {
        return 1;
    }
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(roots, ready)));
    match served {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("resolver: {e:#}");
            1
        }
    }
}

/// Serves until told to stop (false) or until no user-defined network is
/// left (true); the PID file goes in both cases (by the stopper or by the
/// supervisor), so the two need no different exit codes.
async fn run(roots: &Roots, mut ready: Option<std::os::fd::OwnedFd>) -> Result<bool> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let names = Arc::new(Names::open(roots)?);
    // The reactor watches its own descriptor of the same inotify instance.
    let watch_fd = names.watch.as_fd().try_clone_to_owned()?;
    // SAFETY: the OwnedFd moves into the AsyncFd and is closed only when it drops.
    let watch =
        unsafe { AsyncFd::register_with_interest(watch_fd, Interest::READABLE) }.map_err(std::io::Error::from)?;
    let mut servers: HashMap<Ipv4Addr, ServerFuture<Gateway>> = HashMap::new();
    let mut synced = None;
    loop {
        let version = names.version();
        if synced != Some(version) {
            let wanted = names.current().gateways();
            if wanted.is_empty() {
                return Ok(true);
            }
            // Dropping a server aborts its tasks and closes its sockets.
            servers.retain(|gw, _| wanted.contains(gw));
            for gw in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = servers.entry(gw) {
                    match listen(gw, &names) {
                        Ok(server) => {
                            slot.insert(server);
                        }
                        Err(e) => eprintln!("resolver: cannot listen on {gw}:53: {e:#}"),
                    }
                }
            }
            synced = Some(version);
            // Listening on every gateway it could: the starter may go on.
            if let Some(fd) = ready.take() {
                let _ = nix::unistd::write(&fd, b"r");
            }
        }
        tokio::select! {
            // The watch first: a change queued before a question is read before it.
            biased;
            ready = watch.readable() => {
                let mut guard = ready?;
                names.catch_up();
                guard.clear_ready();
            }
            _ = names.changed.notified() => {}
            _ = hup.recv() => names.reload(),
            _ = term.recv() => return Ok(false),
            _ = int.recv() => return Ok(false),
        }
    }
}

/// hickory's server on `gateway`:53, UDP and TCP. The sockets bind with
/// IP_FREEBIND, so a gateway address not (yet) on its bridge is no error.
fn listen(gateway: Ipv4Addr, names: &Arc<Names>) -> Result<ServerFuture<Gateway>> {
    let addr = SockaddrIn::from(SocketAddrV4::new(gateway, 53));
    let bound = |kind: SockType| -> Result<OwnedFd> {
        let fd = socket::socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
        socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
        // TCP: a restarted resolver binds despite its predecessor's
        // connections in TIME_WAIT. Not UDP, where it would let two
        // resolvers share the port silently.
        if kind == SockType::Stream {
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        }
        socket::bind(fd.as_raw_fd(), &addr)?;
        Ok(fd)
    };
    let udp = bound(SockType::Datagram).context("UDP")?;
    let tcp = bound(SockType::Stream).context("TCP")?;
    socket::listen(&tcp, Backlog::new(128)?).context("TCP listen")?;
    let mut server = ServerFuture::new(Gateway { addr: gateway, names: names.clone() });
    server.register_socket(tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(udp))?);
    server.register_listener(tokio::net::TcpListener::from_std(std::net::TcpListener::from(tcp))?, TCP_IDLE);
    Ok(server)
}
