//! Sandboxes: a network namespace plus a UTS namespace (or the host's, or
//! another sandbox's), attached to networks, optionally running a command.
use std::{
    fs,
    net::Ipv4Addr,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, bail};

use serde::{Deserialize, Serialize};

use crate::{
    config::Config,
    host::Host,
    hostfiles, netns,
    network::{self, DEFAULT_NETWORK_NAME, ipam},
    paths::Roots,
    publish,
    state::{self, Attachment, HostConfig, Intent, Link, Mode, Network, Sandbox, State, Store},
    teardown::{Rollback, RolledBackBadly, Teardown},
    validate,
};

#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    pub name: String,
    /// `bridge` (default), `host`, `none`, `container:NAME` or a network name.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// Docker `--publish` (`-p`) specifications.
    pub publish: Vec<String>,
    pub aliases: Vec<String>,
    pub links: Vec<String>,
    pub expose: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `NAME:IP`, IP may be `host-gateway`.
    pub add_hosts: Vec<String>,
}

fn parse_links(state: &State, specs: &[String]) -> Result<Vec<Link>> {
    specs
        .iter()
        .map(|spec| {
            let (name, alias) = spec.split_once(':').unwrap_or((spec, spec));
            let target = state.sandbox(name).with_context(|| format!("could not link to {name}"))?;
            if target.attachment(DEFAULT_NETWORK_NAME).is_none() {
                bail!("could not link to {name}: links work on the default bridge network only");
            }
            validate::name(alias)?;
            Ok(Link { name: name.to_string(), alias: alias.to_string() })
        })
        .collect()
}

fn parse_host_config(config: &Config, state: &State, req: &RunRequest) -> Result<HostConfig> {
    let dns = req.dns.iter().map(|d| validate::ipv4(d, "DNS server address")).collect::<Result<_>>()?;
    let gateway = state.networks.get(DEFAULT_NETWORK_NAME).map(|n| n.gateway).unwrap_or(config.default_gateway);
    let extra_hosts = req
        .add_hosts
        .iter()
        .map(|h| {
            let (name, ip) = h.split_once(':').with_context(|| format!("invalid --add-host {h:?}: NAME:IP"))?;
            let ip = if ip == "host-gateway" { gateway } else { validate::ipv4(ip, "--add-host address")? };
            if name.is_empty() {
                bail!("invalid --add-host {h:?}: NAME:IP");
            }
            Ok((name.to_string(), ip))
        })
        .collect::<Result<_>>()?;
    Ok(HostConfig { dns, dns_search: req.dns_search.clone(), dns_options: req.dns_options.clone(), extra_hosts })
}

/// The next free `ethN` of a sandbox.
fn next_ifname(sandbox: &Sandbox) -> String {
    (0..).map(|i| format!("eth{i}")).find(|n| !sandbox.attachments.iter().any(|a| &a.ifname == n)).expect("unbounded")
}

/// What `run` will make, computed and checked before anything changes: the
/// record as it will be stored (namespaces, attachment with its address and
/// MAC, published ports with their host ports, links), and the default
/// network when this run creates it. Applying it is [`apply`], which first
/// records it as the command's intent ([`Intent::Run`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub sandbox: Sandbox,
    /// The default network, when it does not exist yet and this run makes it.
    pub network: Option<Network>,
}

/// Checks a `run` request against `state` and the configuration and works
/// out everything it will make. Changes nothing and reads nothing but its
/// arguments (and, for `--network host`, the host's name).
pub fn plan(config: &Config, roots: &Roots, state: &State, req: &RunRequest) -> Result<Plan> {
    validate::name(&req.name)?;
    if state.sandboxes.contains_key(&req.name) {
        bail!("the sandbox name {} is already in use", req.name);
    }
    let requested = req.network.clone().unwrap_or_else(|| DEFAULT_NETWORK_NAME.to_string());
    let (mode, net_name) = match requested.as_str() {
        "host" => (Mode::Host, None),
        "none" => (Mode::Attached, None),
        other => match other.strip_prefix("container:") {
            Some(owner) => {
                let o = state.sandbox(owner)?;
                if o.mode != Mode::Attached {
                    bail!("cannot join the network namespace of {owner}: it does not own one");
                }
                (Mode::Container(owner.to_string()), None)
            }
            None => {
                if other != DEFAULT_NETWORK_NAME {
                    state.network(other)?;
                }
                (Mode::Attached, Some(other.to_string()))
            }
        },
    };
    if net_name.is_none() {
        for (what, given) in [
            ("--ip", req.ip.is_some()),
            ("--mac-address", req.mac.is_some()),
            ("--publish", !req.publish.is_empty()),
            ("--network-alias", !req.aliases.is_empty()),
            ("--link", !req.links.is_empty()),
        ] {
            if given {
                bail!("conflicting options: {what} and the network mode {requested}");
            }
        }
        if req.hostname.is_some() && mode != Mode::Attached {
            bail!("conflicting options: hostname and the network mode {requested}");
        }
    }
    let requested_ip = req.ip.as_deref().map(|s| validate::ipv4(s, "IP address")).transpose()?;
    let mac = req.mac.as_deref().map(validate::mac).transpose()?;
    if let Some(h) = &req.hostname {
        validate::hostname(h)?;
    }
    // The network as it is, or the default one as it will be on first use.
    let network = match &net_name {
        Some(n) if n == DEFAULT_NETWORK_NAME => {
            Some(state.networks.get(n).cloned().unwrap_or_else(|| network::plan_default(state, config)))
        }
        Some(n) => Some(state.network(n)?.clone()),
        None => None,
    };
    // The default network comes into being with the first attached sandbox,
    // whichever network that sandbox is on (as `bridge` always exists in
    // Docker).
    let creates_network = match &network {
        Some(n) if n.is_default && !state.networks.contains_key(&n.name) => Some(n.clone()),
        Some(_) if !state.networks.contains_key(DEFAULT_NETWORK_NAME) => Some(network::plan_default(state, config)),
        _ => None,
    };
    if let Some(net) = &network {
        if net.is_default && !req.aliases.is_empty() {
            bail!("network-scoped aliases are only supported for user-defined networks");
        }
        if !net.is_default && !req.links.is_empty() {
            bail!("--link is supported on the default bridge network only");
        }
    }
    if let Some(mac) = mac {
        if state.sandboxes.values().flat_map(|s| &s.attachments).any(|a| a.mac == mac) {
            bail!("MAC address {} is already in use", validate::format_mac(&mac));
        }
    }
    for a in &req.aliases {
        validate::name(a)?;
    }
    let links = parse_links(state, &req.links)?;
    let expose = req.expose.iter().map(|e| publish::parse_filter(e)).collect::<Result<Vec<_>>>()?;
    let specs = req.publish.iter().map(|p| publish::parse(p)).collect::<Result<Vec<_>>>()?;
    let published = allocate_ports(config, state, network.as_ref(), &specs, &req.name)?;
    let host_config = parse_host_config(config, state, req)?;

    let id = state::new_id();
    let attachments = match &network {
        Some(net) => {
            let ip = ipam::allocate(net, state.addresses_on(&net.name), requested_ip)?;
            vec![Attachment {
                network: net.name.clone(),
                endpoint_id: state::new_id(),
                ifname: "eth0".into(),
                host_ifname: host_ifname(&id),
                ip,
                mac: mac.unwrap_or_else(|| ipam::mac_for(ip)),
                aliases: req.aliases.clone(),
            }]
        }
        None => Vec::new(),
    };
    let (netns, uts, hostname) = match &mode {
        Mode::Host => (PathBuf::new(), PathBuf::new(), nix::unistd::gethostname()?.to_string_lossy().into_owned()),
        Mode::Container(owner) => {
            let o = state.sandbox(owner)?;
            (o.netns.clone(), o.uts.clone(), o.hostname.clone())
        }
        // `external::plan` puts the given namespace in afterwards.
        Mode::Attached | Mode::External { .. } => (
            roots.netns_dir().join(&req.name),
            roots.uts_dir().join(&req.name),
            req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        ),
    };
    let sandbox = Sandbox {
        name: req.name.clone(),
        hostname,
        netns,
        uts,
        id,
        created: state::now(),
        attachments,
        pid: None,
        command: Vec::new(),
        published,
        mode,
        host_config,
        links,
        expose,
    };
    Ok(Plan { sandbox, network: creates_network })
}

/// Host ports for `specs` on `net` (on the address its driver binds to,
/// else the configured one), chosen against those every sandbox but
/// `except` holds.
fn allocate_ports(
    config: &Config,
    state: &State,
    net: Option<&Network>,
    specs: &[publish::Spec],
    except: &str,
) -> Result<Vec<publish::Published>> {
    let bind_ip = match net {
        Some(net) => network::driver::of(net)?.host_binding(),
        None => None,
    }
    .unwrap_or(config.default_bind_ip);
    let taken = state.sandboxes.values().filter(|s| s.name != except).flat_map(|s| &s.published);
    publish::allocate(taken, specs, bind_ip)
}

/// Refuses published ports on addresses the host does not have
/// ([`publish::check_host_addresses`]).
pub(crate) fn check_host_addresses(host: &Host, published: &[publish::Published]) -> Result<()> {
    // Docker endpoints, CNI ADDs and most runs publish nothing: no dump.
    if published.is_empty() {
        return Ok(());
    }
    let host_addrs: Vec<Ipv4Addr> = host.rtnl.all_ipv4_addresses()?.into_iter().map(|(a, _)| a).collect();
    publish::check_host_addresses(published, &host_addrs)
}

/// Makes what `plan` worked out, step by step, after recording it as the
/// command's intent; on failure every step made so far is reversed and the
/// reversals that failed are reported too. A crash instead leaves the intent
/// for `system::repair` to roll back.
pub fn apply(host: &Host, store: &Store, state: &mut State, plan: Plan) -> Result<Sandbox> {
    apply_to(host, store, state, plan, End::Inside { default_route: true })
}

/// Where [`apply_to`] leaves the sandbox end of the new interface.
#[derive(Clone, Copy, Debug)]
pub enum End<'a> {
    /// In the sandbox's namespace, addressed, with the default route or
    /// without it (an external namespace routed already keeps its route).
    Inside { default_route: bool },
    /// In the host namespace as `peer`, for a container engine that moves
    /// it into its container itself ([`crate::external::Mover::Engine`]).
    InHost { peer: &'a str },
}

/// [`apply`], leaving the sandbox end of the interface where `end` says.
pub fn apply_to(host: &Host, store: &Store, state: &mut State, plan: Plan, end: End) -> Result<Sandbox> {
    let Plan { mut sandbox, network: new_network } = plan;
    let was_loaded = host.datapath.is_loaded();
    store.begin(Intent::Run {
        sandbox: sandbox.clone(),
        network: new_network.clone().map(Box::new),
        datapath_was_loaded: was_loaded,
    })?;
    let sandbox_dir = host.roots.sandbox_dir(&sandbox.name);
    let sandbox = Rollback::new().run(|rollback| {
        if sandbox.owns_namespaces() {
            netns::create_net(&sandbox.netns)?;
            let path = sandbox.netns.clone();
            rollback.push("network namespace", move || netns::remove(&path));
            netns::create_uts(&sandbox.uts, &sandbox.hostname)?;
            let path = sandbox.uts.clone();
            rollback.push("UTS namespace", move || netns::remove(&path));
            netns::run_in(&sandbox.netns, || crate::link::Rtnl::new()?.loopback_up())?;
        }
        if let Some(att) = sandbox.attachments.first().cloned() {
            if let Some(net) = new_network {
                let created = network::build(host, state, net)?;
                rollback.push("default network", move || network::destroy(host, &created));
            }
            if !was_loaded {
                rollback.push("data path", || host.datapath.unload());
            }
            network::prepare_datapath(host, state)?;
            let net = state.network(&att.network)?.clone();
            match end {
                End::Inside { default_route } => {
                    network::attach(host, &net, &sandbox.netns, &att, default_route, rollback)?
                }
                End::InHost { peer } => {
                    let driver = network::driver::of(&net)?;
                    driver.attach_external(host, &net, &att, peer)?;
                    let what = format!("attachment to {}", net.name);
                    let (net, att) = (net.clone(), att.clone());
                    rollback.push(what, move || driver.detach(host, &net, Path::new(""), &att));
                }
            }
            let target = att.ip;
            publish::install(&host.datapath, &mut sandbox.published, target)?;
            let installed = sandbox.published.clone();
            rollback.push("published ports", move || publish::uninstall(&host.datapath, &installed));
            let pairs = link_pairs(state, &sandbox);
            set_links(host, &pairs, true)?;
            rollback.push("links", move || set_links(host, &pairs, false));
        }
        if sandbox.owns_namespaces() {
            let dir = sandbox_dir.clone();
            rollback.push("sandbox files", move || remove_dir(&dir));
        }
        hostfiles::write(host, state, &sandbox)?;
        Ok(sandbox)
    })?;
    state.sandboxes.insert(sandbox.name.clone(), sandbox.clone());
    crate::dns::ensure(host, state)?;
    Ok(sandbox)
}

/// The host device of a sandbox's first interface, named after its ID (a
/// container engine's too), as Docker names its veths.
pub fn host_ifname(id: &str) -> String {
    format!("veth{}", id.get(..7).unwrap_or(id))
}

/// Creates a sandbox and records it: [`plan`], then [`apply`].
pub fn create(host: &Host, store: &Store, state: &mut State, req: &RunRequest) -> Result<Sandbox> {
    let plan = plan(&host.config, &host.roots, state, req)?;
    check_host_addresses(host, &plan.sandbox.published)?;
    apply(host, store, state, plan)
}

/// Removes a sandbox's files; already gone is done.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// The address pairs `--link` opens traffic between on an ICC-less network.
fn link_pairs(state: &State, sandbox: &Sandbox) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let Some(me) = sandbox.attachment(DEFAULT_NETWORK_NAME) else { return Vec::new() };
    sandbox
        .links
        .iter()
        .filter_map(|link| state.sandboxes.get(&link.name).and_then(|t| t.attachment(DEFAULT_NETWORK_NAME)))
        .map(|peer| (me.ip, peer.ip))
        .collect()
}

/// Allows (or forbids again) traffic between each pair.
fn set_links(host: &Host, pairs: &[(Ipv4Addr, Ipv4Addr)], allow: bool) -> Result<()> {
    pairs.iter().try_for_each(|&(a, b)| host.datapath.set_link(a, b, allow))
}

/// `network connect`: one more interface, on `net_name`.
pub fn connect(
    host: &Host,
    state: &mut State,
    net_name: &str,
    name: &str,
    ip: Option<&str>,
    aliases: &[String],
) -> Result<()> {
    let sandbox = state.sandbox(name)?.clone();
    let net = state.network(net_name)?.clone();
    if sandbox.mode != Mode::Attached {
        bail!("sandbox {name} shares another network namespace and cannot be connected");
    }
    if sandbox.attachment(net_name).is_some() {
        bail!("sandbox {name} is already connected to network {net_name}");
    }
    if net.is_default && !aliases.is_empty() {
        bail!("network-scoped aliases are only supported for user-defined networks");
    }
    for a in aliases {
        validate::name(a)?;
    }
    let requested_ip = ip.map(|s| validate::ipv4(s, "IP address")).transpose()?;
    let ip = ipam::allocate(&net, state.addresses_on(net_name), requested_ip)?;
    network::prepare_datapath(host, state)?;
    let attachment = Attachment {
        network: net_name.to_string(),
        endpoint_id: state::new_id(),
        ifname: next_ifname(&sandbox),
        host_ifname: format!("veth{}{}", &sandbox.id[..6], &state::new_id()[..3]),
        ip,
        mac: ipam::mac_for(ip),
        aliases: aliases.to_vec(),
    };
    let mut sandbox = sandbox;
    Rollback::new().run(|rollback| {
        network::attach(host, &net, &sandbox.netns, &attachment, sandbox.attachments.is_empty(), rollback)?;
        sandbox.attachments.push(attachment);
        hostfiles::write(host, state, &sandbox)
    })?;
    state.sandboxes.insert(name.to_string(), sandbox);
    crate::dns::ensure(host, state)
}

/// `network disconnect`.
pub fn disconnect(host: &Host, state: &mut State, net_name: &str, name: &str) -> Result<()> {
    let net = state.network(net_name)?.clone();
    let mut sandbox = state.sandbox(name)?.clone();
    let Some(pos) = sandbox.attachments.iter().position(|a| a.network == net_name) else {
        bail!("sandbox {name} is not connected to network {net_name}");
    };
    let mut teardown = Teardown::new();
    if net.is_default {
        teardown.step("links", set_links(host, &link_pairs(state, &sandbox), false));
    }
    let att = sandbox.attachments.remove(pos);
    teardown.step(format!("attachment to {net_name}"), network::detach(host, &net, &sandbox.netns, &att));
    teardown.step("tracked connections", forget_flows(host, &[att.ip]));
    state.sandboxes.insert(name.to_string(), sandbox.clone());
    teardown.step("sandbox files", hostfiles::write(host, state, &sandbox));
    // The last member of the last user-defined network may just have left.
    teardown.step("resolver", crate::dns::ensure(host, state));
    teardown.finish()
}

/// Publishes `specs` to the external sandbox `name`'s address, replacing
/// what it published before (an engine programs a container's ports as a
/// whole). Host ports are chosen against every other sandbox's, the record
/// is saved with them before the data path gets them (so a crash leaves
/// nothing its removal would not take away), and saved again with the
/// range slots they got.
pub fn publish_external(
    host: &Host,
    store: &Store,
    state: &mut State,
    name: &str,
    specs: &[publish::Spec],
) -> Result<Vec<publish::Published>> {
    let mut sandbox = state.sandbox(name)?.clone();
    let att = sandbox.attachments.first().with_context(|| format!("sandbox {name} has no interface"))?.clone();
    let net = state.network(&att.network)?;
    let mut published = allocate_ports(&host.config, state, Some(net), specs, name)?;
    check_host_addresses(host, &published)?;
    unpublish_external(host, state, name)?;
    sandbox.published = published.clone();
    state.sandboxes.insert(name.to_string(), sandbox.clone());
    store.save(state)?;
    network::prepare_datapath(host, state)?;
    publish::install(&host.datapath, &mut published, att.ip)?;
    sandbox.published = published.clone();
    state.sandboxes.insert(name.to_string(), sandbox);
    store.save(state)?;
    Ok(published)
}

/// Takes the external sandbox `name`'s published ports out of the data
/// path and its record (the caller saves).
pub fn unpublish_external(host: &Host, state: &mut State, name: &str) -> Result<()> {
    let mut sandbox = state.sandbox(name)?.clone();
    if sandbox.published.is_empty() {
        return Ok(());
    }
    if host.datapath.is_loaded() {
        uninstall_published(host, &sandbox)?;
    }
    sandbox.published.clear();
    state.sandboxes.insert(name.to_string(), sandbox);
    Ok(())
}

/// Drops conntrack entries of connections that involve `ips`.
fn forget_flows(host: &Host, ips: &[Ipv4Addr]) -> Result<()> {
    if !host.datapath.is_loaded() {
        return Ok(());
    }
    let ips: Vec<[u8; 4]> = ips.iter().map(|a| a.octets()).collect();
    let involves = |k: &netpath_common::FlowKey, e: &netpath_common::CtEntry| {
        [k.saddr, k.daddr, e.rewrite.saddr, e.rewrite.daddr].iter().any(|a| ips.contains(a))
    };
    host.datapath.remove_conntrack(involves).map(|_| ())
}

/// Sandboxes sharing `name`'s namespaces (`container:NAME`).
pub fn joiners(state: &State, name: &str) -> Vec<String> {
    state.sandboxes.values().filter(|s| s.mode == Mode::Container(name.to_string())).map(|s| s.name.clone()).collect()
}

/// Whether the sandbox's detached command still runs.
pub fn is_running(sandbox: &Sandbox) -> bool {
    sandbox.pid.is_some_and(|pid| match sandbox.mode {
        Mode::Attached => process_in(pid, &sandbox.netns),
        _ => Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid),
    })
}

/// Tears a sandbox down (and, with `force`, the sandboxes sharing its
/// namespaces first), its intent recorded first. Every step runs and every
/// failure is reported (see [`crate::teardown`]); the record is forgotten
/// either way, so what could not be removed is named once, here, and not
/// retried.
pub fn remove(host: &Host, store: &Store, state: &mut State, name: &str, force: bool) -> Result<()> {
    remove_recorded(host, Some(store), state, name, force)
}

/// [`remove`], with the intent recorded in `store` unless the caller
/// recorded a wider one (`system reset`).
pub(crate) fn remove_recorded(
    host: &Host,
    store: Option<&Store>,
    state: &mut State,
    name: &str,
    force: bool,
) -> Result<()> {
    let sandbox = state.sandbox(name)?.clone();
    if !force && is_running(&sandbox) {
        bail!("you cannot remove a running sandbox {name}: stop its command or use rm -f");
    }
    let users = joiners(state, name);
    if !users.is_empty() && !force {
        bail!(
            "sandbox {name} is in use by {} (network mode container:{name}): remove them first or use rm -f",
            users.join(", ")
        );
    }
    let mut teardown = Teardown::new();
    for u in users {
        teardown.step(format!("sandbox {u}"), remove_recorded(host, store, state, &u, true));
    }
    if let Some(store) = store {
        store.begin(Intent::Remove { sandbox: sandbox.clone() })?;
    }
    teardown.absorb(take_down(host, state, &sandbox, None));
    state.sandboxes.remove(name);
    teardown.step("resolver", crate::dns::ensure(host, state));
    teardown.finish()
}

/// Takes down everything a sandbox record says it is made of: its
/// processes, published ports, links, attachments, tracked connections,
/// namespaces and files. Works from the record alone (what `rm` removes, and
/// what a crashed `run` or `rm` recorded as its intent), so every step
/// treats "already gone" as done; without pins (after a reboot) the map
/// steps are skipped. `extra_network` is a network the record's attachments
/// may name that the state does not hold (the default network an
/// interrupted `run` was creating). The record itself stays in `state`.
pub(crate) fn take_down(host: &Host, state: &State, sandbox: &Sandbox, extra_network: Option<&Network>) -> Result<()> {
    let mut teardown = Teardown::new();
    if sandbox.owns_namespaces() {
        kill_all_in(&sandbox.netns);
    } else if let Some(pid) = sandbox.pid.filter(|_| is_running(sandbox)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let addresses: Vec<Ipv4Addr> = sandbox.attachments.iter().map(|a| a.ip).collect();
    if host.datapath.is_loaded() {
        teardown.absorb(uninstall_published(host, sandbox));
        teardown.step("links", set_links(host, &link_pairs(state, sandbox), false));
        teardown.step("links of its addresses", host.datapath.remove_links_of(&addresses));
    }
    for att in &sandbox.attachments {
        let what = format!("attachment to {}", att.network);
        let net = state.networks.get(&att.network).or(extra_network.filter(|n| n.name == att.network));
        match net {
            Some(net) => teardown.step(what, network::detach(host, net, &sandbox.netns, att)),
            None => teardown.step(what, Err(anyhow::anyhow!("network {} not found", att.network))),
        }
    }
    teardown.step("tracked connections", forget_flows(host, &addresses));
    if sandbox.owns_namespaces() {
        teardown.step("network namespace", netns::remove(&sandbox.netns));
        teardown.step("UTS namespace", netns::remove(&sandbox.uts));
    }
    teardown.step("sandbox files", remove_dir(&host.roots.sandbox_dir(&sandbox.name)));
    teardown.finish()
}

/// Puts a sandbox whose devices are in place back into a data path loaded
/// afresh (the pins were lost): program links, endpoints, published ports
/// (range slots chosen again, hence `&mut`), links.
pub(crate) fn reinstall(host: &Host, state: &State, sandbox: &mut Sandbox) -> Result<()> {
    for att in &sandbox.attachments {
        let net = state.network(&att.network)?;
        network::driver::of(net)?.reattach(host, net, att).with_context(|| format!("attachment to {}", net.name))?;
    }
    if let Some(att) = sandbox.attachments.first() {
        for m in &mut sandbox.published {
            m.range_slot = None;
        }
        publish::install(&host.datapath, &mut sandbox.published, att.ip)?;
        set_links(host, &link_pairs(state, sandbox), true)?;
    }
    Ok(())
}

/// Takes a sandbox's published ports out of the (loaded) data path: its
/// entries, and every range slot leading to its addresses (a record from a
/// plan does not know the range slots its ranges got). Every step runs.
fn uninstall_published(host: &Host, sandbox: &Sandbox) -> Result<()> {
    let addresses: Vec<Ipv4Addr> = sandbox.attachments.iter().map(|a| a.ip).collect();
    let mut teardown = Teardown::new();
    teardown.step("published ports", publish::uninstall(&host.datapath, &sandbox.published));
    teardown.step("published ranges", clear_ranges_to(host, &addresses));
    teardown.finish()
}

/// Frees the published range slots leading to `addresses` (only a live
/// sandbox's ranges lead to its address, and addresses are unique).
fn clear_ranges_to(host: &Host, addresses: &[Ipv4Addr]) -> Result<()> {
    let targets: Vec<[u8; 4]> = addresses.iter().map(|a| a.octets()).collect();
    for (slot, range) in host.datapath.range_slots()?.iter().enumerate() {
        if range.proto != 0 && targets.contains(&range.target_addr) {
            host.datapath.set_range(slot as u32, netpath_common::PublishedRange::default())?;
        }
    }
    Ok(())
}

/// `rm -f NAME` of a sandbox the state does not know (its run crashed
/// before any record, or the state file was lost) but whose namespace or
/// files are still on disk under this instance's run directory: everything
/// found there goes, the data path's entries for its addresses too.
/// Returns whether anything was found.
pub fn remove_orphan(host: &Host, name: &str) -> Result<bool> {
    validate::name(name)?;
    let (netns_path, uts, dir) =
        (host.roots.netns_dir().join(name), host.roots.uts_dir().join(name), host.roots.sandbox_dir(name));
    if !netns_path.exists() && !uts.exists() && !dir.exists() {
        return Ok(false);
    }
    let mut teardown = Teardown::new();
    let addresses = remove_orphan_netns(&netns_path, &mut teardown);
    if host.datapath.is_loaded() && !addresses.is_empty() {
        teardown.step("data path entries", forget_addresses(host, &addresses));
    }
    teardown.step(format!("namespace file {}", uts.display()), netns::remove(&uts));
    teardown.step("sandbox files", remove_dir(&dir));
    teardown.finish().map(|()| true)
}

/// Takes away a network namespace file of this instance's that no record
/// names (see [`remove_orphan`] and `system check --repair`): the
/// processes in the namespace, its interfaces, the file. A missing file is
/// nothing to do. Returns the IPv4 addresses the interfaces held, whose
/// data path entries the caller forgets ([`forget_addresses`]).
pub(crate) fn remove_orphan_netns(path: &Path, teardown: &mut Teardown) -> Vec<Ipv4Addr> {
    kill_all_in(path);
    let mut addresses = Vec::new();
    // A file never mounted (a run that crashed while making it) has no interfaces.
    if netns::is_live(path) {
        match clear_namespace(path) {
            Ok(found) => addresses = found,
            Err(e) => teardown.step(format!("interfaces in {}", path.display()), Err(e)),
        }
    }
    teardown.step(format!("namespace file {}", path.display()), netns::remove(path));
    addresses
}

/// Deletes every interface in the namespace at `path` but `lo` (a veth's
/// host side goes with it, at once rather than when the namespace dies);
/// returns the IPv4 addresses they held.
fn clear_namespace(path: &Path) -> Result<Vec<Ipv4Addr>> {
    netns::run_in(path, || {
        let rtnl = crate::link::Rtnl::new()?;
        let addrs: Vec<Ipv4Addr> =
            rtnl.all_ipv4_addresses()?.into_iter().map(|(a, _)| a).filter(|a| !a.is_loopback()).collect();
        for name in rtnl.link_names()? {
            if name != "lo" {
                rtnl.delete_by_name(&name)?;
            }
        }
        Ok(addrs)
    })
}

/// Removes whatever the data path holds for `addresses`: endpoint entries,
/// published ports and ranges leading there, links, tracked connections.
pub(crate) fn forget_addresses(host: &Host, addresses: &[Ipv4Addr]) -> Result<()> {
    let mut teardown = Teardown::new();
    for ip in addresses {
        teardown.step(
            format!("endpoint {ip}"),
            host.datapath.remove_endpoint(netpath_common::EndpointKey { ipv4: ip.octets() }),
        );
    }
    let targets: Vec<[u8; 4]> = addresses.iter().map(|a| a.octets()).collect();
    let published = host.datapath.published().and_then(|map| {
        let keys: Vec<netpath_common::PublishedKey> =
            map.iter().filter_map(|r| r.ok()).filter(|(_, t)| targets.contains(&t.addr)).map(|(k, _)| k).collect();
        host.datapath.remove_published(keys)
    });
    teardown.step("published ports", published);
    teardown.step("published ranges", clear_ranges_to(host, addresses));
    teardown.step("links", host.datapath.remove_links_of(addresses));
    teardown.step("tracked connections", forget_flows(host, addresses));
    teardown.finish()
}

/// Whether `pid` is alive and lives in the namespace at `netns`.
pub fn process_in(pid: i32, netns_path: &Path) -> bool {
    let Ok(want) = fs::metadata(netns_path) else {
        return false;
    };
    fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev())
}

/// Kills every process inside the sandbox's network namespace: they belong to
/// the sandbox, which is going away.
pub fn kill_all_in(netns_path: &Path) {
    let Ok(want) = fs::metadata(netns_path) else {
        return;
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let mut killed = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            killed.push(pid);
        }
    }
    for _ in 0..100 {
        if killed.iter().all(|&p| !Path::new(&format!("/proc/{p}")).exists() || zombie(p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

/// A command that will run inside the sandbox: its network and UTS
/// namespaces, its own /etc/hosts, /etc/resolv.conf and /etc/hostname
/// (bind-mounted in a private mount namespace), and `--link` variables.
pub fn command(roots: &Roots, state: &State, sandbox: &Sandbox, argv: &[String]) -> Result<Command> {
    let (program, args) = argv.split_first().context("no command given")?;
    let files_of = match &sandbox.mode {
        Mode::Container(owner) => owner.as_str(),
        _ => sandbox.name.as_str(),
    };
    let join = match sandbox.mode {
        Mode::Host => netns::Join::default(),
        _ => netns::Join {
            net: Some(sandbox.netns.clone()),
            // An external namespace comes without a UTS namespace of netpath's.
            uts: (!sandbox.uts.as_os_str().is_empty()).then(|| sandbox.uts.clone()),
            files: hostfiles::mounts(&roots.sandbox_dir(files_of)),
        },
    };
    let mut cmd = join.command(program)?;
    cmd.args(args);
    cmd.env("HOSTNAME", &sandbox.hostname);
    for (k, v) in hostfiles::link_env(state, sandbox) {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// Runs `argv` in the sandbox with the caller's stdio and returns its status.
pub fn run_foreground(roots: &Roots, state: &State, sandbox: &Sandbox, argv: &[String]) -> Result<ExitStatus> {
    let mut cmd = command(roots, state, sandbox, argv)?;
    cmd.status().with_context(|| format!("running {:?} in sandbox {}", argv[0], sandbox.name))
}

/// Starts `argv` in the sandbox in its own session, output to the sandbox log.
pub fn spawn_detached(host: &Host, state: &State, sandbox: &Sandbox, argv: &[String]) -> Result<i32> {
    let dir = host.roots.sandbox_dir(&sandbox.name);
    fs::create_dir_all(&dir)?;
    let log = fs::File::create(dir.join("log")).context("creating sandbox log")?;
    let mut cmd = command(&host.roots, state, sandbox, argv)?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let child = cmd.spawn().with_context(|| format!("starting {:?} in sandbox {}", argv[0], sandbox.name))?;
    Ok(child.id() as i32)
}

/// `run -d` with a command: starts it and records it; when it cannot start,
/// the sandbox goes again (a failure of that is reported with the reason).
pub fn start_detached(
    host: &Host,
    store: &Store,
    state: &mut State,
    sandbox: &mut Sandbox,
    argv: &[String],
) -> Result<()> {
    match spawn_detached(host, state, sandbox, argv) {
        Ok(pid) => {
            sandbox.pid = Some(pid);
            sandbox.command = argv.to_vec();
            state.sandboxes.insert(sandbox.name.clone(), sandbox.clone());
            Ok(())
        }
        Err(cause) => Err(match remove(host, store, state, &sandbox.name, true) {
            Ok(()) => cause,
            Err(rollback) => RolledBackBadly { cause, rollback }.into(),
        }),
    }
}

/// Exit code to pass through for a finished command: its own, or 128+signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn roots() -> Roots {
        Roots::under(Path::new("/nonexistent/np"), "/nonexistent/bpf".into(), "/nonexistent/cg".into())
    }

    fn run(name: &str, extra: impl FnOnce(&mut RunRequest)) -> RunRequest {
        let mut req = RunRequest { name: name.into(), ..Default::default() };
        extra(&mut req);
        req
    }

    #[test]
    fn a_plan_holds_addresses_devices_and_ports() {
        let (config, state) = (Config::default(), State::default());
        let req = run("web", |r| r.publish = vec!["8080:80".into(), "53/udp".into()]);
        let Plan { sandbox, network } = plan(&config, &roots(), &state, &req).unwrap();
        assert!(network.is_some_and(|n| n.is_default), "the first run makes the default network");
        let att = &sandbox.attachments[0];
        assert_eq!((att.network.as_str(), att.ip), (DEFAULT_NETWORK_NAME, Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(att.mac, [0x02, 0x42, 172, 17, 0, 2]);
        assert_eq!(att.host_ifname, format!("veth{}", &sandbox.id[..7]));
        assert_eq!(sandbox.netns, roots().netns_dir().join("web"));
        let ports: Vec<(u16, u16)> = sandbox.published.iter().map(|p| (p.host_first, p.container_first)).collect();
        assert_eq!(ports, [(8080, 80), (publish::EPHEMERAL_FIRST, 53)]);
        // The crash-safe intent record reads back the same.
        let intent = Intent::Run { sandbox: sandbox.clone(), network: None, datapath_was_loaded: false };
        let back: Intent = serde_json::from_str(&serde_json::to_string(&intent).unwrap()).unwrap();
        let Intent::Run { sandbox: back, .. } = back else { panic!("not a run") };
        assert_eq!(back.attachments[0].ip, att.ip);
        assert_eq!(back.published, sandbox.published);
    }

    #[test]
    fn a_plan_sees_what_is_taken() {
        let config = Config::default();
        let mut state = State::default();
        let first = plan(&config, &roots(), &state, &run("a", |r| r.publish = vec!["8080:80".into()])).unwrap();
        state.networks.insert(DEFAULT_NETWORK_NAME.into(), network::plan_default(&state, &config));
        state.sandboxes.insert("a".into(), first.sandbox);
        let second = plan(&config, &roots(), &state, &run("b", |_| {})).unwrap();
        assert_eq!(second.sandbox.attachments[0].ip, Ipv4Addr::new(172, 17, 0, 3));
        let taken = plan(&config, &roots(), &state, &run("c", |r| r.publish = vec!["8080:81".into()]));
        assert!(taken.unwrap_err().to_string().contains("already allocated"));
        assert!(plan(&config, &roots(), &state, &run("a", |_| {})).is_err(), "name in use");
        let none = plan(&config, &roots(), &state, &run("n", |r| r.network = Some("none".into()))).unwrap();
        assert!(none.sandbox.attachments.is_empty());
        let conflict = run("h", |r| {
            r.network = Some("host".into());
            r.publish = vec!["80".into()];
        });
        assert!(plan(&config, &roots(), &state, &conflict).unwrap_err().to_string().contains("conflicting"));
    }
}
