//! Namespaces netpath did not make: wiring a container engine's network
//! namespace (or one made with `ip netns add`) onto a netpath network, the
//! way pipework and nova-docker wire containers. It is `run` with the
//! namespace given instead of created: the same [`sandbox::plan`] (address
//! by IPAM or requested, MAC, aliases, published ports), the same
//! [`sandbox::apply`] (intent recorded first, every step rolled back on
//! failure) and the same teardown, on a record whose mode is
//! [`Mode::External`]: netpath never creates, writes files into or deletes
//! such a namespace. Its callers differ in one thing, who moves the
//! container end of the veth pair into the namespace ([`Mover`]): netpath,
//! for `network attach` and the CNI plugin (`crate::cni`), which name the
//! namespace; the engine itself, for Docker's remote driver
//! (`crate::docker_plugin`), which takes the end from the host namespace.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{
    config::Config,
    host::Host,
    link::Rtnl,
    netns,
    paths::Roots,
    sandbox::{self, End, Plan, RunRequest},
    state::{Mode, Sandbox, State, Store},
    validate,
};

/// Who asked for an external record (`Mode::External::owner`).
pub const OWNER_ATTACH: &str = "attach";
pub const OWNER_CNI: &str = "cni";

/// Who moves the container end of the interface into the container's
/// namespace: the one thing the callers of this module differ in.
#[derive(Clone, Debug)]
pub enum Mover {
    /// netpath, into the namespace at `netns` (as [`netns_path`] resolved
    /// it), where it becomes `ifname`, addressed and routed by netpath
    /// (`network attach`, CNI).
    Netpath { netns: PathBuf, ifname: String },
    /// The container engine (Docker's remote driver): the end waits in the
    /// host namespace as `peer`, with the attachment's MAC, for the engine
    /// to move, rename and address; the namespace is known only while the
    /// container is joined. The record, its attachment and its host device
    /// take the engine's ID for the interface (Docker's EndpointID).
    Engine { endpoint_id: String, peer: String },
}

/// What wiring a container's namespace needs: `run`'s network options,
/// who owns the namespace, and who moves the interface into it.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    /// The sandbox record's name (what `ps` shows and the resolver answers to).
    pub name: String,
    /// The network's stored name.
    pub network: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub aliases: Vec<String>,
    /// Docker `--publish` specifications.
    pub publish: Vec<String>,
    /// `attach`, `cni` or `docker`.
    pub owner: String,
    pub mover: Mover,
}

/// `--netns PATH|PID`: a PID names that process's namespace
/// (`/proc/PID/ns/net`), anything else a namespace file (`/run/netns/NAME`).
pub fn netns_path(spec: &str) -> Result<PathBuf> {
    let by_pid = !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit());
    let path = if by_pid { PathBuf::from(format!("/proc/{spec}/ns/net")) } else { PathBuf::from(spec) };
    if spec.is_empty() || !path.exists() {
        if by_pid {
            bail!("no process {spec}: its network namespace cannot be attached");
        }
        bail!("network namespace {spec:?} not found");
    }
    if !netns::is_live(&path) {
        bail!("{spec} is not a network namespace");
    }
    Ok(path)
}

/// The default record name for a namespace: its file's name
/// (`ip netns add NAME`), or `pidN` for a process's.
pub fn default_name(spec: &str) -> String {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        return format!("pid{spec}");
    }
    Path::new(spec).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Whether two paths are the same namespace (same nsfs inode).
pub fn same_namespace(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => a == b,
    }
}

/// The first `ethN` the namespace does not have yet.
pub fn free_ifname(netns_path: &Path) -> Result<String> {
    let names = netns::run_in(netns_path, || Rtnl::new()?.link_names())?;
    Ok((0..).map(|i| format!("eth{i}")).find(|n| !names.contains(n)).expect("unbounded"))
}

/// Works out the record `attach` will make, checking everything first;
/// changes nothing. Reads nothing but its arguments and the namespace
/// files' identities.
pub fn plan(config: &Config, roots: &Roots, state: &State, req: &AttachRequest) -> Result<Plan> {
    if ["host", "none", "default"].contains(&req.network.as_str()) || req.network.starts_with("container:") {
        bail!("network attach needs a network, not the network mode {}", req.network);
    }
    match &req.mover {
        Mover::Netpath { netns, ifname } => check_namespace(state, &req.network, netns, ifname)?,
        Mover::Engine { peer, .. } => validate::ifname(peer)?,
    }
    let run = RunRequest {
        name: req.name.clone(),
        network: Some(req.network.clone()),
        ip: req.ip.clone(),
        mac: req.mac.clone(),
        publish: req.publish.clone(),
        aliases: req.aliases.clone(),
        ..Default::default()
    };
    let mut plan = sandbox::plan(config, roots, state, &run)?;
    let sb = &mut plan.sandbox;
    sb.mode = Mode::External { owner: req.owner.clone() };
    sb.uts = PathBuf::new();
    match &req.mover {
        Mover::Netpath { netns, ifname } => {
            sb.netns = netns.clone();
            sb.hostname = req.name.clone();
            sb.attachments[0].ifname = ifname.clone();
        }
        Mover::Engine { endpoint_id, .. } => {
            // Known when the engine's container joins (and only until it leaves).
            sb.netns = PathBuf::new();
            sb.hostname = String::new();
            sb.id = endpoint_id.clone();
            let att = &mut sb.attachments[0];
            att.endpoint_id = endpoint_id.clone();
            att.host_ifname = sandbox::host_ifname(endpoint_id);
            validate::ifname(&att.host_ifname)?;
            // The engine has a default network of its own (Docker's
            // docker0, on the subnet netpath's would take): the one a
            // first `run` makes is not made for it.
            plan.network = None;
        }
    }
    Ok(plan)
}

/// Refuses a namespace netpath is not to wire as `ifname` on `network`:
/// the host's own, a sandbox's of netpath's (`network connect` wires
/// those), one on the network already, or an interface name wired there.
fn check_namespace(state: &State, network: &str, netns: &Path, ifname: &str) -> Result<()> {
    validate::ifname(ifname)?;
    if same_namespace(Path::new("/proc/self/ns/net"), netns) {
        bail!("{} is the host's own namespace: netpath wires containers, not its host", netns.display());
    }
    for s in state.sandboxes.values().filter(|s| same_namespace(&s.netns, netns)) {
        if s.owns_namespaces() {
            bail!("{} is the namespace of sandbox {}: use network connect", netns.display(), s.name);
        }
        if s.attachment(network).is_some() {
            bail!("{} is already attached to network {network} (sandbox {})", netns.display(), s.name);
        }
        if s.attachments.iter().any(|a| a.ifname == ifname) {
            bail!("interface {ifname} in {} is already wired by sandbox {}", netns.display(), s.name);
        }
    }
    Ok(())
}

/// Wires the namespace onto the network: [`plan`], then [`apply`]. The
/// caller saves the state.
pub fn attach(host: &Host, store: &Store, state: &mut State, req: &AttachRequest) -> Result<Sandbox> {
    let plan = plan(&host.config, &host.roots, state, req)?;
    apply(host, store, state, req, plan)
}

/// Makes the [`plan`] of `req` with the same [`sandbox::apply`] as `run`,
/// once the system has answered what a plan cannot know: the interface
/// name is free in the namespace, the published ports' host addresses
/// exist. A namespace routed already (on another network) keeps its
/// default route; an engine's interface is left in the host namespace.
pub fn apply(host: &Host, store: &Store, state: &mut State, req: &AttachRequest, plan: Plan) -> Result<Sandbox> {
    let end = match &req.mover {
        Mover::Netpath { netns, ifname } => {
            let (taken, routed) = netns::run_in(netns, || {
                let rtnl = Rtnl::new()?;
                Ok((rtnl.index(ifname)?, !rtnl.default_route_links()?.is_empty()))
            })
            .with_context(|| format!("reading the interfaces of {}", netns.display()))?;
            if taken.is_some() {
                bail!("interface {ifname} already exists in {}", netns.display());
            }
            End::Inside { default_route: !routed }
        }
        Mover::Engine { peer, .. } => End::InHost { peer },
    };
    sandbox::check_host_addresses(host, &plan.sandbox.published)?;
    sandbox::apply_to(host, store, state, plan, end)
}

/// Whether `sandbox` is a record of an external namespace.
pub fn is_external(sandbox: &Sandbox) -> bool {
    matches!(sandbox.mode, Mode::External { .. })
}

/// The external record wired onto `network` in the namespace at `netns_path`.
pub fn find<'a>(state: &'a State, network: &str, netns_path: &Path) -> Option<&'a Sandbox> {
    state
        .sandboxes
        .values()
        .find(|s| is_external(s) && s.attachment(network).is_some() && same_namespace(&s.netns, netns_path))
}

/// Undoes [`attach`]: the interface, map entries, published ports and the
/// record go (every step run, every failure reported); the namespace stays.
pub fn detach(host: &Host, store: &Store, state: &mut State, name: &str) -> Result<()> {
    let sandbox = state.sandbox(name)?;
    if !is_external(sandbox) {
        bail!("sandbox {name} is netpath's own (made by run): remove it with rm");
    }
    sandbox::remove(host, store, state, name, true)
}

/// `network detach NET SANDBOX`: the record must be on that network.
pub fn detach_from(host: &Host, store: &Store, state: &mut State, network: &str, name: &str) -> Result<()> {
    let sandbox = state.sandbox(name)?;
    if sandbox.attachment(network).is_none() {
        bail!("sandbox {name} is not attached to network {network}");
    }
    detach(host, store, state, name)
}
