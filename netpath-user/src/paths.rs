//! Where one netpath instance keeps its files. Every path it writes sits
//! under one of these roots, so two instances (say, in two lab host
//! namespaces) never collide.
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Roots {
    /// Persistent state: networks, sandboxes, address allocations.
    pub state: PathBuf,
    /// Runtime files: namespace mounts, sandbox logs.
    pub run: PathBuf,
    /// bpffs directory holding pinned maps, programs and links.
    pub bpf: PathBuf,
    /// Docker-style daemon.json; absent means defaults.
    pub config: PathBuf,
    /// cgroup v2 directory the socket programs attach to; they act only for
    /// sockets of the host namespace.
    pub cgroup: PathBuf,
}

impl Roots {
    pub const STATE_ENV: &str = "NETPATH_STATE_DIR";
    pub const RUN_ENV: &str = "NETPATH_RUN_DIR";
    pub const BPF_ENV: &str = "NETPATH_BPF_DIR";
    pub const CONFIG_ENV: &str = "NETPATH_CONFIG";
    pub const CGROUP_ENV: &str = "NETPATH_CGROUP";

    pub const DEFAULT_STATE: &str = "/var/lib/netpath";
    pub const DEFAULT_RUN: &str = "/run/netpath";
    pub const DEFAULT_BPF: &str = "/sys/fs/bpf/netpath";
    pub const DEFAULT_CONFIG: &str = "/etc/netpath/daemon.json";

    /// Roots for an instance whose every directory lies under `base`, except
    /// pins, which must live on bpffs.
    pub fn under(base: &Path, bpf: PathBuf, cgroup: PathBuf) -> Self {
        Roots { state: base.join("state"), run: base.join("run"), bpf, config: base.join("daemon.json"), cgroup }
    }

    /// The cgroup v2 root: the unified hierarchy of a hybrid layout, else
    /// /sys/fs/cgroup itself.
    pub fn default_cgroup() -> PathBuf {
        let unified = Path::new("/sys/fs/cgroup/unified");
        if unified.join("cgroup.procs").exists() { unified.into() } else { "/sys/fs/cgroup".into() }
    }

    pub fn state_file(&self) -> PathBuf {
        self.state.join("state.json")
    }

    /// Work under way that the state file does not say yet (see `state`).
    pub fn intent_file(&self) -> PathBuf {
        self.state.join("intent.json")
    }

    /// Present while this boot's kernel objects match the state: written by
    /// the first command after boot once it restored them (see `system`).
    pub fn boot_marker(&self) -> PathBuf {
        self.run.join("booted")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state.join("lock")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.run.join("netns")
    }

    pub fn uts_dir(&self) -> PathBuf {
        self.run.join("uts")
    }

    pub fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.run.join("sandboxes").join(name)
    }

    /// The environment that hands these roots to a child `netpath`.
    pub fn env(&self) -> [(&'static str, &Path); 5] {
        [
            (Self::STATE_ENV, &self.state),
            (Self::RUN_ENV, &self.run),
            (Self::BPF_ENV, &self.bpf),
            (Self::CONFIG_ENV, &self.config),
            (Self::CGROUP_ENV, &self.cgroup),
        ]
    }
}
