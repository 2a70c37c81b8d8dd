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

use crate::{
    host::Host,
    hostfiles,
    link::Mac,
    netns,
    network::{self, DEFAULT_NETWORK, ipam},
    paths::Roots,
    ports,
    state::{self, Attachment, HostConfig, Link, Mode, Sandbox, State},
    undo::Undo,
};

#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    pub name: String,
    /// `bridge` (default), `host`, `none`, `container:NAME` or a network name.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// Docker `-p` specifications.
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

pub fn parse_mac(text: &str) -> Result<Mac> {
    let parts: Vec<&str> = text.split(':').collect();
    let bytes: Option<Vec<u8>> =
        parts.iter().map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2)).collect();
    match bytes {
        Some(b) if b.len() == 6 && b[0] & 1 == 0 => Ok([b[0], b[1], b[2], b[3], b[4], b[5]]),
        _ => bail!("invalid MAC address {text:?}: six hex pairs, unicast"),
    }
}

pub fn format_mac(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr> {
    s.parse::<Ipv4Addr>().map_err(|_| anyhow::anyhow!("invalid {what}: {s}"))
}

fn parse_links(state: &State, specs: &[String]) -> Result<Vec<Link>> {
    specs
        .iter()
        .map(|spec| {
            let (name, alias) = spec.split_once(':').unwrap_or((spec, spec));
            let target = state.sandbox(name).with_context(|| format!("could not link to {name}"))?;
            if target.attachment(DEFAULT_NETWORK).is_none() {
                bail!("could not link to {name}: links work on the default bridge network only");
            }
            network::validate_name(alias)?;
            Ok(Link { name: name.to_string(), alias: alias.to_string() })
        })
        .collect()
}

fn parse_host_config(host: &Host, state: &State, req: &RunRequest) -> Result<HostConfig> {
    let dns = req.dns.iter().map(|d| parse_ip(d, "DNS server address")).collect::<Result<_>>()?;
    let gateway = state.networks.get(DEFAULT_NETWORK).map(|n| n.gateway).unwrap_or(host.config.default_gateway);
    let extra_hosts = req
        .add_hosts
        .iter()
        .map(|h| {
            let (name, ip) = h.split_once(':').with_context(|| format!("invalid --add-host {h:?}: NAME:IP"))?;
            let ip = if ip == "host-gateway" { gateway } else { parse_ip(ip, "--add-host address")? };
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

/// Creates a sandbox and records it. All checks happen before the first change.
pub fn create(host: &Host, state: &mut State, req: &RunRequest) -> Result<Sandbox> {
    network::validate_name(&req.name)?;
    if state.sandboxes.contains_key(&req.name) {
        bail!("the sandbox name {} is already in use", req.name);
    }
    let requested = req.network.clone().unwrap_or_else(|| DEFAULT_NETWORK.to_string());
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
                if other != DEFAULT_NETWORK {
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
    let requested_ip = req.ip.as_deref().map(|s| parse_ip(s, "IP address")).transpose()?;
    let mac = req.mac.as_deref().map(parse_mac).transpose()?;
    if let Some(h) = &req.hostname {
        if h.is_empty() || h.len() > 64 {
            bail!("invalid hostname {h:?}");
        }
    }
    if let Some(net_name) = &net_name {
        if net_name == DEFAULT_NETWORK {
            // Checks an IP against the default network before creating it.
            let planned = network::plan_default(state, &host.config);
            if let Some(ip) = requested_ip {
                ipam::allocate(&planned, state.addresses_on(DEFAULT_NETWORK), Some(ip))?;
            }
            if !req.aliases.is_empty() {
                bail!("network-scoped aliases are only supported for user-defined networks");
            }
        } else {
            ipam::allocate(state.network(net_name)?, state.addresses_on(net_name), requested_ip)?;
            if !req.links.is_empty() {
                bail!("--link is supported on the default bridge network only");
            }
        }
    }
    if let Some(mac) = mac {
        if state.sandboxes.values().flat_map(|s| &s.attachments).any(|a| a.mac == mac) {
            bail!("MAC address {} is already in use", format_mac(&mac));
        }
    }
    for a in &req.aliases {
        network::validate_name(a)?;
    }
    let links = parse_links(state, &req.links)?;
    let expose = req.expose.iter().map(|e| ports::parse_filter(e)).collect::<Result<Vec<_>>>()?;
    let port_requests = req.publish.iter().map(|p| ports::parse(p)).collect::<Result<Vec<_>>>()?;
    let bind_ip = net_name
        .as_ref()
        .and_then(|n| state.networks.get(n))
        .and_then(|n| n.host_binding())
        .unwrap_or(host.config.default_bind_ip);
    let mut mappings = ports::allocate(state, &port_requests, bind_ip)?;
    let host_config = parse_host_config(host, state, req)?;

    let id = state::new_id();
    let (netns, uts, hostname) = match &mode {
        Mode::Host => (PathBuf::new(), PathBuf::new(), nix::unistd::gethostname()?.to_string_lossy().into_owned()),
        Mode::Container(owner) => {
            let o = state.sandbox(owner)?;
            (o.netns.clone(), o.uts.clone(), o.hostname.clone())
        }
        Mode::Attached => (
            host.roots.netns_dir().join(&req.name),
            host.roots.uts_dir().join(&req.name),
            req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        ),
    };
    let mut sandbox = Sandbox {
        name: req.name.clone(),
        hostname,
        netns,
        uts,
        id,
        created: state::now(),
        attachments: Vec::new(),
        pid: None,
        command: Vec::new(),
        ports: Vec::new(),
        mode,
        host_config,
        links,
        expose,
    };

    let mut undo = Undo::new();
    if sandbox.owns_namespaces() {
        netns::create_net(&sandbox.netns)?;
        undo.push("network namespace", || netns::remove(&sandbox.netns));
        netns::create_uts(&sandbox.uts, &sandbox.hostname)?;
        undo.push("UTS namespace", || netns::remove(&sandbox.uts));
        netns::run_in(&sandbox.netns, || crate::link::Rtnl::new()?.loopback_up())?;
    }
    if let Some(net_name) = &net_name {
        let had_default = state.networks.get(DEFAULT_NETWORK).cloned();
        network::ensure_default(host, state)?;
        if had_default.is_none() {
            if let Some(created) = state.networks.get(DEFAULT_NETWORK).cloned() {
                undo.push("default network", move || network::bridge::remove(host, &created));
            }
        }
        let was_loaded = host.datapath.is_loaded();
        if !was_loaded {
            undo.push("data path", || host.datapath.unload());
        }
        host.prepare_datapath(state)?;
        let net = state.network(net_name)?.clone();
        let ip = ipam::allocate(&net, state.addresses_on(net_name), requested_ip)?;
        let attachment = Attachment {
            network: net_name.clone(),
            endpoint_id: state::new_id(),
            ifname: "eth0".into(),
            host_ifname: format!("veth{}", &sandbox.id[..7]),
            ip,
            mac: mac.unwrap_or_else(|| ipam::mac_for(ip)),
            aliases: req.aliases.clone(),
        };
        network::attach(host, &net, &sandbox.netns, &attachment, true)?;
        let detach_copy = attachment.clone();
        let ns = sandbox.netns.clone();
        let driver = net.driver.clone();
        undo.push("network attachment", move || network::detach(host, &driver, &ns, &detach_copy));
        ports::install(&host.datapath, &mut mappings, ip)?;
        sandbox.ports = mappings;
        sandbox.attachments.push(attachment);
        set_links(host, state, &sandbox, true)?;
    }
    hostfiles::write(host, state, &sandbox)?;
    undo.commit();
    state.sandboxes.insert(sandbox.name.clone(), sandbox.clone());
    crate::dns::ensure(host, state)?;
    Ok(sandbox)
}

/// Allows (or forbids again) the traffic `--link` opens on an ICC-less network.
fn set_links(host: &Host, state: &State, sandbox: &Sandbox, allow: bool) -> Result<()> {
    let Some(me) = sandbox.attachment(DEFAULT_NETWORK) else { return Ok(()) };
    for link in &sandbox.links {
        let Some(peer) = state.sandboxes.get(&link.name).and_then(|t| t.attachment(DEFAULT_NETWORK)) else {
            continue;
        };
        host.datapath.set_link(me.ip, peer.ip, allow)?;
    }
    Ok(())
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
        network::validate_name(a)?;
    }
    let requested_ip = ip.map(|s| parse_ip(s, "IP address")).transpose()?;
    let ip = ipam::allocate(&net, state.addresses_on(net_name), requested_ip)?;
    host.prepare_datapath(state)?;
    let attachment = Attachment {
        network: net_name.to_string(),
        endpoint_id: state::new_id(),
        ifname: next_ifname(&sandbox),
        host_ifname: format!("veth{}{}", &sandbox.id[..6], &state::new_id()[..3]),
        ip,
        mac: ipam::mac_for(ip),
        aliases: aliases.to_vec(),
    };
    network::attach(host, &net, &sandbox.netns, &attachment, sandbox.attachments.is_empty())?;
    let mut sandbox = sandbox;
    sandbox.attachments.push(attachment);
    state.sandboxes.insert(name.to_string(), sandbox.clone());
    hostfiles::write(host, state, &sandbox)?;
    crate::dns::ensure(host, state)
}

/// `network disconnect`.
pub fn disconnect(host: &Host, state: &mut State, net_name: &str, name: &str) -> Result<()> {
    state.network(net_name)?;
    let mut sandbox = state.sandbox(name)?.clone();
    let Some(pos) = sandbox.attachments.iter().position(|a| a.network == net_name) else {
        bail!("sandbox {name} is not connected to network {net_name}");
    };
    if net_name == DEFAULT_NETWORK && !sandbox.links.is_empty() {
        set_links(host, state, &sandbox, false)?;
    }
    let att = sandbox.attachments.remove(pos);
    let driver = state.network(net_name)?.driver.clone();
    network::detach(host, &driver, &sandbox.netns, &att)?;
    forget_flows(host, &[att.ip])?;
    state.sandboxes.insert(name.to_string(), sandbox.clone());
    hostfiles::write(host, state, &sandbox)?;
    // The last member of the last user-defined network may just have left.
    crate::dns::ensure(host, state)
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

/// Tears a sandbox down. Every step runs; the first error is reported.
pub fn remove(host: &Host, state: &mut State, name: &str, force: bool) -> Result<()> {
    let sandbox = state.sandbox(name)?.clone();
    if !force && is_running(&sandbox) {
        bail!("you cannot remove a running sandbox {name}: stop its command or use rm -f");
    }
    let users = joiners(state, name);
    if !users.is_empty() {
        if !force {
            bail!(
                "sandbox {name} is in use by {} (network mode container:{name}): remove them first or use rm -f",
                users.join(", ")
            );
        }
        for u in users {
            remove(host, state, &u, true)?;
        }
    }
    let mut results = Vec::new();
    if sandbox.owns_namespaces() {
        kill_all_in(&sandbox.netns);
    } else if let Some(pid) = sandbox.pid.filter(|_| is_running(&sandbox)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    if host.datapath.is_loaded() {
        results.push(ports::uninstall(&host.datapath, &sandbox.ports));
        results.push(set_links(host, state, &sandbox, false));
        results.push(host.datapath.remove_links_of(&sandbox.attachments.iter().map(|a| a.ip).collect::<Vec<_>>()));
    }
    for att in &sandbox.attachments {
        let driver = state.networks.get(&att.network).map_or("bridge", |n| n.driver.as_str());
        results.push(network::detach(host, driver, &sandbox.netns, att));
    }
    results.push(forget_flows(host, &sandbox.attachments.iter().map(|a| a.ip).collect::<Vec<_>>()));
    if sandbox.owns_namespaces() {
        results.push(netns::remove(&sandbox.netns));
        results.push(netns::remove(&sandbox.uts));
    }
    let dir = host.roots.sandbox_dir(name);
    if dir.exists() {
        results.push(fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display())));
    }
    state.sandboxes.remove(name);
    results.push(crate::dns::ensure(host, state));
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
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
            uts: Some(sandbox.uts.clone()),
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

/// Exit code to pass through for a finished command: its own, or 128+signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
