//! Bring your own namespace: wiring a network namespace netpath did not
//! make (a container engine's, or one made with `ip netns add`) onto a
//! netpath network, the way pipework and nova-docker wire containers. It is
//! `run` with the namespace given instead of created: the same
//! [`sandbox::plan`] (address by IPAM or requested, MAC, aliases, published
//! ports), the same [`sandbox::apply`] (intent recorded first, every step
//! rolled back on failure) and the same teardown, on a record whose mode is
//! [`Mode::External`]: netpath never creates, writes files into or deletes
//! such a namespace. `network attach`/`detach` and the CNI plugin
//! (`crate::cni`) are thin callers of this module.
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
    sandbox::{self, Plan, RunRequest},
    state::{Mode, Sandbox, State, Store},
    validate,
};

/// Who asked for an external record (`Mode::External::owner`).
pub const OWNER_ATTACH: &str = "attach";
pub const OWNER_CNI: &str = "cni";

/// What wiring an existing namespace needs: `run`'s network options plus
/// the namespace and the interface name inside it.
#[derive(Clone, Debug, Default)]
pub struct AttachRequest {
    /// The sandbox record's name (what `ps` shows and the resolver answers to).
    pub name: String,
    /// The network's stored name.
    pub network: String,
    /// The namespace, as [`netns_path`] resolved it.
    pub netns: PathBuf,
    /// The interface inside the namespace.
    pub ifname: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub aliases: Vec<String>,
    /// Docker `--publish` specifications.
    pub publish: Vec<String>,
    /// `attach`, `cni` or `docker`.
    pub owner: String,
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
/// files' identities (the host's own namespace is refused).
pub fn plan(config: &Config, roots: &Roots, state: &State, req: &AttachRequest) -> Result<Plan> {
    if ["host", "none", "default"].contains(&req.network.as_str()) || req.network.starts_with("container:") {
        bail!("network attach needs a network, not the network mode {}", req.network);
    }
    validate::ifname(&req.ifname)?;
    if same_namespace(Path::new("/proc/self/ns/net"), &req.netns) {
        bail!("{} is the host's own namespace: netpath wires containers, not its host", req.netns.display());
    }
    for s in state.sandboxes.values().filter(|s| same_namespace(&s.netns, &req.netns)) {
        if s.owns_namespaces() {
            bail!("{} is the namespace of sandbox {}: use network connect", req.netns.display(), s.name);
        }
        if s.attachment(&req.network).is_some() {
            bail!("{} is already attached to network {} (sandbox {})", req.netns.display(), req.network, s.name);
        }
        if s.attachments.iter().any(|a| a.ifname == req.ifname) {
            bail!("interface {} in {} is already wired by sandbox {}", req.ifname, req.netns.display(), s.name);
        }
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
    sb.netns = req.netns.clone();
    sb.uts = PathBuf::new();
    sb.hostname = req.name.clone();
    sb.attachments[0].ifname = req.ifname.clone();
    Ok(plan)
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
/// default route.
pub fn apply(host: &Host, store: &Store, state: &mut State, req: &AttachRequest, plan: Plan) -> Result<Sandbox> {
    let (taken, routed) = netns::run_in(&req.netns, || {
        let rtnl = Rtnl::new()?;
        Ok((rtnl.index(&req.ifname)?, !rtnl.default_route_links()?.is_empty()))
    })
    .with_context(|| format!("reading the interfaces of {}", req.netns.display()))?;
    if taken.is_some() {
        bail!("interface {} already exists in {}", req.ifname, req.netns.display());
    }
    sandbox::check_host_addresses(host, &plan.sandbox.published)?;
    sandbox::apply_routed(host, store, state, plan, !routed)
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
