//! Network and UTS namespaces as files: created by unsharing on a throwaway
//! thread and bind-mounting the namespace onto a path (what `ip netns add`
//! does), entered by `setns` on a dedicated thread or in a child before exec.
use std::{
    fs::{self, File},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

/// Creates a namespace of `kind` and pins it at `path`, running `init` inside
/// it first (for UTS: set the hostname).
fn create(path: &Path, kind: CloneFlags, init: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if dir == Path::new(IPROUTE2_NETNS_DIR) {
            share_like_iproute2(dir)?;
        }
    }
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating namespace file {}", path.display()))?;
    let proc_name = if kind == CloneFlags::CLONE_NEWNET { "net" } else { "uts" };
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(kind).context("unshare")?;
            init()?;
            let own = format!("/proc/thread-self/ns/{proc_name}");
            mount(Some(own.as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .with_context(|| format!("bind-mounting {own} on {}", path.display()))
        })
        .join()
        .map_err(|_| anyhow!("namespace thread panicked"))?
    });
    match result {
        Ok(()) => Ok(()),
        Err(cause) => Err(match fs::remove_file(path) {
            Ok(()) => cause,
            Err(e) => crate::teardown::RolledBackBadly {
                cause,
                rollback: anyhow::Error::new(e).context(format!("removing {}", path.display())),
            }
            .into(),
        }),
    }
}

/// Where `ip netns` and Podman keep named network namespaces.
const IPROUTE2_NETNS_DIR: &str = "/run/netns";

/// iproute2 and Podman turn the namespace directory into a shared bind
/// mount of itself the first time they add a namespace there, which hides
/// the namespace files already mounted in it (they can then be neither
/// entered by name nor removed). Doing it before our first namespace, as
/// they do, keeps every file on the one mount.
fn share_like_iproute2(dir: &Path) -> Result<()> {
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, Some("none"), shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(Some(dir), dir, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .with_context(|| format!("bind-mounting {} on itself", dir.display()))?;
            mount(None::<&str>, dir, Some("none"), shared, None::<&str>)
                .with_context(|| format!("making {} a shared mount", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("making {} a shared mount", dir.display())),
    }
}

pub fn create_net(path: &Path) -> Result<()> {
    create(path, CloneFlags::CLONE_NEWNET, || Ok(()))
}

pub fn create_uts(path: &Path, hostname: &str) -> Result<()> {
    create(path, CloneFlags::CLONE_NEWUTS, || nix::unistd::sethostname(hostname).context("sethostname"))
}

/// Whether `path` is a namespace (a bind mount of nsfs), not a plain file
/// left behind when the namespace went (at a reboot, the mount goes).
pub fn is_live(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Unmounts and deletes a namespace file; a missing one is not an error.
pub fn remove(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
    }
    fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
}

/// Runs `f` on a fresh thread that has joined the network namespace at `path`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = File::open(path).with_context(|| format!("opening netns {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {}", path.display()))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("netns thread panicked"))?
    })
}

/// Namespaces a child process joins before it execs, and files it sees in
/// place of the host's (bind mounts in a private mount namespace, the way
/// `ip netns exec` shows `/etc/netns/NAME/`).
#[derive(Clone, Debug, Default)]
pub struct Join {
    pub net: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// (source, target) pairs; targets must exist.
    pub files: Vec<(PathBuf, PathBuf)>,
}

impl Join {
    pub fn net(path: impl Into<PathBuf>) -> Self {
        Join { net: Some(path.into()), ..Join::default() }
    }

    /// Makes `cmd` enter these namespaces between fork and exec.
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        let open = |p: &Option<PathBuf>| -> Result<Option<File>> {
            p.as_ref().map(|p| File::open(p).with_context(|| format!("opening {}", p.display()))).transpose()
        };
        let net = open(&self.net)?;
        let uts = open(&self.uts)?;
        let files: Vec<(std::ffi::CString, std::ffi::CString)> = self
            .files
            .iter()
            .map(|(src, dst)| {
                use std::os::unix::ffi::OsStrExt;
                Ok((
                    std::ffi::CString::new(src.as_os_str().as_bytes())?,
                    std::ffi::CString::new(dst.as_os_str().as_bytes())?,
                ))
            })
            .collect::<Result<_>>()?;
        // SAFETY: setns, unshare and mount are plain syscalls; the closure
        // allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = &net {
                    setns(fd, CloneFlags::CLONE_NEWNET)?;
                }
                if let Some(fd) = &uts {
                    setns(fd, CloneFlags::CLONE_NEWUTS)?;
                }
                if !files.is_empty() {
                    unshare(CloneFlags::CLONE_NEWNS)?;
                    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
                    for (src, dst) in &files {
                        mount(Some(src.as_c_str()), dst.as_c_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
                    }
                }
                Ok(())
            });
        }
        Ok(())
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let mut cmd = Command::new(program);
        self.apply(&mut cmd)?;
        Ok(cmd)
    }
}
