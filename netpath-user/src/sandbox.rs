//! Sandboxes: a network namespace plus a UTS namespace, attached to one
//! network, optionally running a command.
use std::{
    fs,
    net::Ipv4Addr,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{
    host::Host,
    link::Mac,
    netns,
    network::{self, DEFAULT_NETWORK, bridge, ipam},
    ports,
    state::{self, Attachment, Sandbox, State},
    undo::Undo,
};

#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    pub name: String,
    pub network: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// Docker `-p` specifications.
    pub publish: Vec<String>,
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

/// Creates a sandbox and records it. All checks happen before the first change.
pub fn create(host: &Host, state: &mut State, req: &RunRequest) -> Result<Sandbox> {
    network::validate_name(&req.name)?;
    if state.sandboxes.contains_key(&req.name) {
        bail!("the sandbox name {} is already in use", req.name);
    }
    let net_name = req.network.clone().unwrap_or_else(|| DEFAULT_NETWORK.to_string());
    if net_name != DEFAULT_NETWORK {
        state.network(&net_name)?;
    }
    let requested_ip = req
        .ip
        .as_deref()
        .map(|s| s.parse::<Ipv4Addr>().map_err(|_| anyhow::anyhow!("invalid IP address: {s}")))
        .transpose()?;
    let mac = req.mac.as_deref().map(parse_mac).transpose()?;
    if let Some(h) = &req.hostname {
        if h.is_empty() || h.len() > 64 {
            bail!("invalid hostname {h:?}");
        }
    }
    if net_name == DEFAULT_NETWORK {
        // Checks an IP against the default network before creating it.
        let planned = network::plan_default(state, &host.config);
        if let Some(ip) = requested_ip {
            ipam::allocate(&planned, state.addresses_on(DEFAULT_NETWORK), Some(ip))?;
        }
    } else {
        ipam::allocate(state.network(&net_name)?, state.addresses_on(&net_name), requested_ip)?;
    }
    if let Some(mac) = mac {
        if state.sandboxes.values().flat_map(|s| &s.attachments).any(|a| a.mac == mac) {
            bail!("MAC address {} is already in use", format_mac(&mac));
        }
    }

    let port_requests = req.publish.iter().map(|p| ports::parse(p)).collect::<Result<Vec<_>>>()?;
    let bind_ip = state.networks.get(&net_name).and_then(|n| n.host_binding()).unwrap_or(host.config.default_bind_ip);
    let mut mappings = ports::allocate(state, &port_requests, bind_ip)?;

    network::ensure_default(host, state)?;
    host.prepare_datapath(state)?;
    let net = state.network(&net_name)?.clone();
    let ip = ipam::allocate(&net, state.addresses_on(&net_name), requested_ip)?;
    let id = state::new_id();
    let attachment = Attachment {
        network: net_name.clone(),
        endpoint_id: state::new_id(),
        ifname: "eth0".into(),
        host_ifname: format!("veth{}", &id[..7]),
        ip,
        mac: mac.unwrap_or_else(|| ipam::mac_for(ip)),
    };
    let sandbox = Sandbox {
        name: req.name.clone(),
        hostname: req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        netns: host.roots.netns_dir().join(&req.name),
        uts: host.roots.uts_dir().join(&req.name),
        id,
        created: state::now(),
        attachments: vec![attachment.clone()],
        pid: None,
        command: Vec::new(),
        ports: Vec::new(),
    };

    let mut undo = Undo::new();
    netns::create_net(&sandbox.netns)?;
    undo.push("network namespace", || netns::remove(&sandbox.netns));
    netns::create_uts(&sandbox.uts, &sandbox.hostname)?;
    undo.push("UTS namespace", || netns::remove(&sandbox.uts));
    bridge::attach(host, &net, &sandbox.netns, &attachment, true)?;
    undo.push("network attachment", || bridge::detach(host, &attachment));
    ports::install(&host.datapath, &mut mappings, ip)?;
    undo.commit();
    let sandbox = Sandbox { ports: mappings, ..sandbox };
    state.sandboxes.insert(sandbox.name.clone(), sandbox.clone());
    Ok(sandbox)
}

/// Tears a sandbox down. Every step runs; the first error is reported.
pub fn remove(host: &Host, state: &mut State, name: &str, force: bool) -> Result<()> {
    let sandbox = state.sandbox(name)?.clone();
    if !force && sandbox.pid.is_some_and(|pid| process_in(pid, &sandbox.netns)) {
        bail!("you cannot remove a running sandbox {name}: stop its command or use rm -f");
    }
    kill_all_in(&sandbox.netns);
    let mut results = Vec::new();
    if host.datapath.is_loaded() {
        results.push(ports::uninstall(&host.datapath, &sandbox.ports));
    }
    for att in &sandbox.attachments {
        results.push(bridge::detach(host, att));
    }
    if host.datapath.is_loaded() {
        let ips: Vec<[u8; 4]> = sandbox.attachments.iter().map(|a| a.ip.octets()).collect();
        let involves = |k: &netpath_common::FlowKey, e: &netpath_common::CtEntry| {
            [k.saddr, k.daddr, e.rewrite.saddr, e.rewrite.daddr].iter().any(|a| ips.contains(a))
        };
        results.push(host.datapath.remove_conntrack(involves).map(|_| ()));
    }
    results.push(netns::remove(&sandbox.netns));
    results.push(netns::remove(&sandbox.uts));
    let dir = host.roots.sandbox_dir(name);
    if dir.exists() {
        results.push(fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display())));
    }
    state.sandboxes.remove(name);
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

/// A command that will run inside the sandbox.
pub fn command(sandbox: &Sandbox, argv: &[String]) -> Result<Command> {
    let (program, args) = argv.split_first().context("no command given")?;
    let join = netns::Join { net: Some(sandbox.netns.clone()), uts: Some(sandbox.uts.clone()) };
    let mut cmd = join.command(program)?;
    cmd.args(args);
    cmd.env("HOSTNAME", &sandbox.hostname);
    Ok(cmd)
}

/// Runs `argv` in the sandbox with the caller's stdio and returns its status.
pub fn run_foreground(sandbox: &Sandbox, argv: &[String]) -> Result<ExitStatus> {
    let mut cmd = command(sandbox, argv)?;
    cmd.status().with_context(|| format!("running {:?} in sandbox {}", argv[0], sandbox.name))
}

/// Starts `argv` in the sandbox in its own session, output to the sandbox log.
pub fn spawn_detached(host: &Host, sandbox: &Sandbox, argv: &[String]) -> Result<i32> {
    let dir = host.roots.sandbox_dir(&sandbox.name);
    fs::create_dir_all(&dir)?;
    let log = fs::File::create(dir.join("log")).context("creating sandbox log")?;
    let mut cmd = command(sandbox, argv)?;
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
