//! The background processes netpath starts and stops itself (the resolver,
//! the cluster agent): one PID file, one lock and one command line each, so
//! that any command can tell cheaply (a file and `/proc/PID/cmdline`, no
//! lock) whether this instance's process runs, and start it under the lock
//! when it does not.
use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::paths::Roots;

/// One kind of background process.
pub struct Background {
    /// The hidden `netpath` subcommand it runs.
    pub subcommand: &'static str,
    /// The stem of its files in the run directory (`NAME.pid`, `NAME.lock`).
    pub file_stem: &'static str,
    /// What messages call it.
    pub what: &'static str,
}

impl Background {
    pub fn pid_file(&self, roots: &Roots) -> PathBuf {
        roots.run.join(format!("{}.pid", self.file_stem))
    }

    /// Serialises starting, stopping and reviving it.
    pub fn lock(&self, roots: &Roots) -> Result<Flock<File>> {
        std::fs::create_dir_all(&roots.run).with_context(|| format!("creating {}", roots.run.display()))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(roots.run.join(format!("{}.lock", self.file_stem)))
            .with_context(|| format!("opening the {} lock", self.what))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("locking the {} lock", self.what))
    }

    pub fn recorded_pid(&self, roots: &Roots) -> Option<i32> {
        std::fs::read_to_string(self.pid_file(roots)).ok()?.trim().parse().ok()
    }

    /// Whether `pid` is this instance's process: its command line is the
    /// one [`Background::command`] gives it, run directory included
    /// (another instance's, a reused PID or a zombie, whose command line is
    /// empty, is not).
    pub fn is_ours(&self, pid: i32, roots: &Roots) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        use std::os::unix::ffi::OsStrExt;
        args.len() == 4
            && args[1] == self.subcommand.as_bytes()
            && args[2] == b"--run-dir"
            && args[3] == roots.run.as_os_str().as_bytes()
    }

    /// Its PID, if it runs.
    pub fn running(&self, roots: &Roots) -> Option<i32> {
        self.recorded_pid(roots).filter(|&pid| self.is_ours(pid, roots))
    }

    /// The command that starts it: this executable with the subcommand and
    /// the run directory (which names the instance, see
    /// [`Background::is_ours`]), the roots in its environment, output to
    /// `log`, in a session of its own (so that a stop can signal its group).
    pub fn command(&self, roots: &Roots, log: File) -> Result<Command> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([self.subcommand, "--run-dir"]).arg(&roots.run);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        for (k, v) in roots.env() {
            cmd.env(k, v);
        }
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid().map(|_| ()).map_err(Into::into)
            });
        }
        Ok(cmd)
    }

    /// Replaces the PID file atomically, so that a reader without the lock
    /// never sees it half written.
    pub fn write_pid_file(&self, roots: &Roots, pid: u32) -> Result<()> {
        crate::state::write_atomically(&self.pid_file(roots), pid.to_string().as_bytes(), false)
    }

    pub fn remove_pid_file(&self, roots: &Roots) {
        let _ = std::fs::remove_file(self.pid_file(roots));
    }
}
