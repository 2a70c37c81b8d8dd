//! Persistent state of one instance: networks and sandboxes, in one JSON
//! document replaced atomically, under an exclusive lock held for the whole
//! read-modify-write of a command.
//!
//! Crash safety is a write-ahead intent: before a command's first kernel
//! change it records what it is about to do (`intent.json`, next to the
//! state, with the complete record of what will be made or taken down), and
//! the state save that makes the change the truth removes it again. A
//! command killed in between leaves the intent behind, and the next command
//! (or `netpath system check --repair`) finishes or rolls back that work from
//! the record before anything else (`system::repair`): an interrupted `run`
//! never hands its address or ports to someone else, because nothing is
//! allocated before the intent is settled.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    net::Ipv4Addr,
    path::PathBuf,
};

use anyhow::{Context, Result, bail};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::{
    link::Mac,
    lookup::{self, Kind, LookupError},
    paths::Roots,
};

/// The label a network made for a container engine carries: the engine's
/// own ID of the network (Docker's NetworkID), which the engine names it by.
pub const LABEL_ENGINE_NETWORK: &str = "io.netpath.engine.network-id";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Sandbox>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// Small number naming the network inside BPF maps.
    pub index: u32,
    pub created: String,
    /// The driver's name; `network::driver::get` turns it into the driver.
    pub driver: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    /// Whether `inspect` lists the gateway: Docker echoes the IPAM config a
    /// user gave, so `--subnet` without `--gateway` shows no gateway.
    #[serde(default = "shown")]
    pub show_gateway: bool,
    /// Where sandbox addresses are allocated from; the subnet when unset.
    pub ip_range: Option<Ipv4Network>,
    /// The host device holding the gateway address (the bridge); empty when
    /// the gateway is elsewhere (macvlan).
    pub bridge: String,
    pub mtu: u32,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The predefined network (named `bridge`, as Docker's).
    pub is_default: bool,
}

/// How a sandbox gets its network namespace (`run --network`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its own namespace, attached to networks (none attached: only `lo`).
    #[default]
    Attached,
    /// The host's namespace and hostname; nothing is created.
    Host,
    /// Another sandbox's namespaces (`container:NAME`).
    Container(String),
    /// A namespace someone else made and removes (a container engine, or the user with
    /// `network attach --netns`): netpath wires interfaces into it and takes them out again,
    /// never creates, writes files into, or deletes the namespace.
    External { owner: String }, // owner: "docker", "cni" or "attach"
}

/// `--link NAME:ALIAS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    pub alias: String,
}

/// What a sandbox's resolver and hosts file say (`--dns`, `--dns-search`,
/// `--dns-option`, `--add-host`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    pub dns: Vec<Ipv4Addr>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// (name, address) in the order given.
    pub extra_hosts: Vec<(String, Ipv4Addr)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sandbox {
    pub name: String,
    pub id: String,
    pub created: String,
    pub hostname: String,
    pub netns: PathBuf,
    pub uts: PathBuf,
    pub attachments: Vec<Attachment>,
    /// The detached command started by `run -d`, if any.
    pub pid: Option<i32>,
    pub command: Vec<String>,
    /// Its `--publish` ports, host ports chosen.
    #[serde(default, alias = "ports")]
    pub published: Vec<crate::publish::Published>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub host_config: HostConfig,
    #[serde(default)]
    pub links: Vec<Link>,
    /// Ports exposed without publishing (`--expose`), for `--link` variables.
    #[serde(default)]
    pub expose: Vec<(u16, crate::publish::Proto)>,
}

impl Sandbox {
    /// Whether this sandbox created (and so must remove) its namespaces.
    pub fn owns_namespaces(&self) -> bool {
        self.mode == Mode::Attached
    }

    pub fn attachment(&self, network: &str) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.network == network)
    }
}

/// A sandbox's interface on one network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    pub endpoint_id: String,
    pub ifname: String,
    pub host_ifname: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Network {
    /// Whether netpath's resolver serves names on this network: user-defined
    /// networks whose gateway address sits on a host device netpath made
    /// (a macvlan's gateway is a router elsewhere).
    pub fn has_resolver(&self) -> bool {
        // A container engine's network has the engine's own resolver
        // (Docker's embedded DNS at 127.0.0.11).
        !self.is_default && !self.bridge.is_empty() && !self.labels.contains_key(LABEL_ENGINE_NETWORK)
    }
}

impl State {
    /// The network named exactly `name` (a name netpath stored).
    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks.get(name).ok_or_else(|| LookupError::NoSuch(Kind::Network, name.to_string()).into())
    }

    /// The sandbox named exactly `name` (a name netpath stored).
    pub fn sandbox(&self, name: &str) -> Result<&Sandbox> {
        self.sandboxes.get(name).ok_or_else(|| LookupError::NoSuch(Kind::Container, name.to_string()).into())
    }

    /// The network a command-line argument names: ID, name or ID prefix.
    pub fn find_network(&self, query: &str) -> Result<&Network> {
        Ok(lookup::resolve(Kind::Network, query, self.networks.values(), |n| &n.name, |n| &n.id)?)
    }

    /// The sandbox a command-line argument names: ID, name or ID prefix.
    pub fn find_sandbox(&self, query: &str) -> Result<&Sandbox> {
        Ok(lookup::resolve(Kind::Container, query, self.sandboxes.values(), |s| &s.name, |s| &s.id)?)
    }

    /// Every address in use on `network`, gateway excluded.
    pub fn addresses_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.sandboxes.values().flat_map(|s| s.attachments.iter()).filter(move |a| a.network == network).map(|a| a.ip)
    }

    pub fn attachments_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = (&'a Sandbox, &'a Attachment)> + 'a {
        self.sandboxes
            .values()
            .flat_map(|s| s.attachments.iter().map(move |a| (s, a)))
            .filter(move |(_, a)| a.network == network)
    }
}

/// Work a command is doing on the kernel that the state file does not say
/// yet: what `system::repair` finishes or rolls back after a crash.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Intent {
    /// `run`: the sandbox as planned (namespaces, veth names, address,
    /// published ports), the default network it creates on first use, and
    /// whether the data path was loaded before. Rolled back unless the state
    /// holds this very sandbox (same ID).
    Run { sandbox: Sandbox, network: Option<Box<Network>>, datapath_was_loaded: bool },
    /// `rm` (and `system reset`): finished from the record.
    Remove { sandbox: Sandbox },
    /// `network create`: rolled back unless the state holds this network.
    NetworkCreate { network: Network },
    /// `network rm`: finished.
    NetworkRemove { network: Network },
    /// `system reset`: finished (everything goes).
    Reset,
}

impl Intent {
    /// One line saying what was interrupted, for reports.
    pub fn describe(&self) -> String {
        match self {
            Intent::Run { sandbox, .. } => format!("run of sandbox {}", sandbox.name),
            Intent::Remove { sandbox } => format!("removal of sandbox {}", sandbox.name),
            Intent::NetworkCreate { network } => format!("creation of network {}", network.name),
            Intent::NetworkRemove { network } => format!("removal of network {}", network.name),
            Intent::Reset => "system reset".to_string(),
        }
    }
}

/// The locked state file. Dropping it releases the lock.
pub struct Store {
    path: PathBuf,
    intent_path: PathBuf,
    /// Intents recorded by this command and not yet settled by a save.
    intents: std::cell::RefCell<Vec<Intent>>,
    _lock: nix::fcntl::Flock<File>,
}

/// What a state file that cannot be parsed became: kept under another name,
/// never overwritten.
#[derive(Debug)]
pub struct Salvaged {
    pub moved_to: PathBuf,
    pub error: String,
}

impl Store {
    fn lock(roots: &Roots) -> Result<(Store, PathBuf)> {
        fs::create_dir_all(&roots.state).with_context(|| format!("creating {}", roots.state.display()))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(roots.lock_file())
            .context("opening state lock")?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .context("locking state")?;
        let path = roots.state_file();
        let store =
            Store { path: path.clone(), intent_path: roots.intent_file(), intents: Default::default(), _lock: lock };
        Ok((store, path))
    }

    /// Opens and locks the state. A state file that cannot be parsed is an
    /// error here (nothing is changed); `system reset` and `system check
    /// --repair` use [`Store::open_salvaging`].
    pub fn open(roots: &Roots) -> Result<(Store, State)> {
        let (store, path) = Self::lock(roots)?;
        let state = match read_state(&path)? {
            Ok(state) => state,
            Err(e) => bail!(
                "the state file {} is unreadable ({e}); `netpath system reset` or `netpath system check --repair` \
                 keeps it under another name and cleans up from what is in the kernel",
                path.display()
            ),
        };
        Ok((store, state))
    }

    /// Opens and locks the state; a state file that cannot be parsed is
    /// renamed aside (and reported through the return value), and the state
    /// starts empty.
    pub fn open_salvaging(roots: &Roots) -> Result<(Store, State, Option<Salvaged>)> {
        let (store, path) = Self::lock(roots)?;
        match read_state(&path)? {
            Ok(state) => Ok((store, state, None)),
            Err(error) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let moved_to = path.with_extension(format!("json.unreadable-{stamp}"));
                fs::rename(&path, &moved_to)
                    .with_context(|| format!("moving the unreadable {} aside", path.display()))?;
                Ok((store, State::default(), Some(Salvaged { moved_to, error })))
            }
        }
    }

    /// Records `intent` durably before the kernel changes it describes.
    /// Intents accumulate until the next [`save`](Store::save).
    pub fn begin(&self, intent: Intent) -> Result<()> {
        let mut intents = self.intents.borrow_mut();
        intents.push(intent);
        // Not synced to disk: the intent guards against the death of this
        // process, which the page cache outlives; a power loss takes every
        // kernel object it describes with it, and the boot restore rebuilds
        // from the state file, which is synced.
        write_atomically(&self.intent_path, &serde_json::to_vec(&*intents)?, false)
    }

    /// Intents a crashed command left behind. One that cannot be parsed is
    /// moved aside and reported as an error.
    pub fn pending(&self) -> Result<Vec<Intent>> {
        match fs::read(&self.intent_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                let aside = self.intent_path.with_extension("json.unreadable");
                let _ = fs::rename(&self.intent_path, &aside);
                anyhow::anyhow!("unreadable interrupted-work record moved to {} ({e})", aside.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.intent_path.display())),
        }
    }

    /// Replaces the state file; the intents recorded so far are settled
    /// (the state now says what they did), and so are any left by a crash.
    pub fn save(&self, state: &State) -> Result<()> {
        write_atomically(&self.path, &serde_json::to_vec_pretty(state)?, true).context("replacing state file")?;
        self.settle()
    }

    fn settle(&self) -> Result<()> {
        self.intents.borrow_mut().clear();
        match fs::remove_file(&self.intent_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.intent_path.display())),
        }
    }
}

impl Drop for Store {
    /// A command that returns without saving has reversed its own changes
    /// (its `Rollback` ran) or made none: its intents are void. Only a crash
    /// skips this and leaves them for `system::repair`.
    fn drop(&mut self) {
        if !self.intents.borrow().is_empty() {
            let _ = self.settle();
        }
    }
}

/// The state file's contents: Ok(Err(why)) when it exists but cannot be
/// parsed.
pub(crate) fn read_state(path: &std::path::Path) -> Result<std::result::Result<State, String>> {
    match fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).map_err(|e| e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ok(State::default())),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` with `bytes` in one rename (the temporary synced to disk
/// first with `sync`), so that a reader sees the old or the new file, never
/// a part. The temporary name carries the PID:
/// two processes replacing the same file never write into one temporary.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8], sync: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Unique per process and per write: two threads of one process (the
    // agent's, a test's in-process agents) may write the same file at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}.{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// This instance's mark on what it makes in the kernel that has no other
/// home under its roots (bridges): the interface alias
/// `netpath:<instance>:network:<id>`, the instance being a digest of the
/// state directory. With the state file lost, `system reset` still finds its
/// own devices and nobody else's.
pub fn instance(roots: &Roots) -> String {
    use sha2::Digest;
    let dir = fs::canonicalize(&roots.state).unwrap_or_else(|_| roots.state.clone());
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

pub fn network_tag(roots: &Roots, net: &Network) -> String {
    format!("{}{}", instance_tag_prefix(roots), &net.id[..12])
}

/// The alias prefix every network device of this instance carries.
pub fn instance_tag_prefix(roots: &Roots) -> String {
    format!("netpath:{}:network:", instance(roots))
}

fn shown() -> bool {
    true
}

pub fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// A Docker-style 64-hex-digit identifier.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("kernel randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_writing_one_file_at_once_each_replace_it_whole() {
        let dir = std::env::temp_dir().join(format!("netpath-atomic-{}", std::process::id()));
        let path = dir.join("status.json");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomically(path, &[t; 64], false).unwrap();
                    }
                });
            }
        });
        let last = fs::read(&path).unwrap();
        assert!(last.len() == 64 && last.iter().all(|b| *b == last[0]), "one write, whole");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn roots(tag: &str) -> Roots {
        let base = std::env::temp_dir().join(format!("netpath-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        Roots::under(&base, "/nonexistent/bpf".into(), "/nonexistent/cg".into())
    }

    fn network(name: &str) -> Network {
        serde_json::from_value(serde_json::json!({
            "name": name, "id": "0123456789abcdef", "index": 1, "created": "now", "driver": "bridge",
            "subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "bridge": "br-0123456789ab", "mtu": 1500,
            "internal": false, "options": {}, "labels": {}, "is_default": false
        }))
        .unwrap()
    }

    #[test]
    fn an_intent_lasts_until_the_state_says_what_it_did() {
        let roots = roots("intent");
        let (store, mut state) = Store::open(&roots).unwrap();
        store.begin(Intent::NetworkCreate { network: network("n1") }).unwrap();
        store.begin(Intent::Reset).unwrap();
        // What a crash leaves: the record, readable by the next command.
        let pending = store.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert!(matches!(&pending[0], Intent::NetworkCreate { network } if network.name == "n1"));
        state.networks.insert("n1".into(), network("n1"));
        store.save(&state).unwrap();
        assert!(store.pending().unwrap().is_empty(), "a save settles it");
        store.begin(Intent::Reset).unwrap();
        drop(store);
        // A command that returned (and so reversed what it did) leaves none.
        let (store, state) = Store::open(&roots).unwrap();
        assert!(store.pending().unwrap().is_empty());
        assert!(state.networks.contains_key("n1"));
        fs::remove_dir_all(roots.state.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_unreadable_state_is_kept_and_never_overwritten() {
        let roots = roots("salvage");
        fs::create_dir_all(&roots.state).unwrap();
        fs::write(roots.state_file(), b"{ garbage").unwrap();
        let refused = Store::open(&roots).err().unwrap().to_string();
        assert!(refused.contains("unreadable") && refused.contains("system reset"), "{refused}");
        assert_eq!(fs::read(roots.state_file()).unwrap(), b"{ garbage", "nothing changed");
        let (store, state, salvaged) = Store::open_salvaging(&roots).unwrap();
        let salvaged = salvaged.unwrap();
        assert!(state.networks.is_empty() && state.sandboxes.is_empty());
        assert_eq!(fs::read(&salvaged.moved_to).unwrap(), b"{ garbage");
        store.save(&state).unwrap();
        assert_eq!(fs::read(&salvaged.moved_to).unwrap(), b"{ garbage", "kept after the next save");
        fs::remove_dir_all(roots.state.parent().unwrap()).unwrap();
    }
}
