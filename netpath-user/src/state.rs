//! Persistent state of one instance: networks and sandboxes, in one JSON
//! document replaced atomically, under an exclusive lock held for the whole
//! read-modify-write of a command.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    net::Ipv4Addr,
    path::PathBuf,
};

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::{
    link::Mac,
    lookup::{self, Kind, LookupError},
    paths::Roots,
};

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
        !self.is_default && !self.bridge.is_empty()
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

/// The locked state file. Dropping it releases the lock.
pub struct Store {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    pub fn open(roots: &Roots) -> Result<(Store, State)> {
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
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok((Store { path, _lock: lock }, state))
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(state)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path).context("replacing state file")
    }
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
