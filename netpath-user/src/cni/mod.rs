//! `netpath-cni`: the CNI plugin (spec 1.0 and 1.1), a thin caller of
//! [`crate::external`]. A runtime runs it with `CNI_*` variables and the
//! network configuration on stdin; it answers on stdout (a result, or an
//! error object with a spec code) and exits non-zero on error.
//!
//! One attachment (container ID, interface) is one external sandbox record
//! named after both ([`record_name`]), so DEL, CHECK and GC find it from the
//! runtime's arguments alone. The network is the
//! conflist's `name`, created on the first ADD from the Docker-like options
//! when netpath does not have it yet. netpath's roots come from the
//! plugin entry's `netpath` object, else the `NETPATH_*` environment (libcni
//! passes the runtime's environment through), else the defaults.
pub mod wire;

use std::{
    io::Read,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::{
    external::{self, AttachRequest, Mover},
    host::Host,
    link::Rtnl,
    netns,
    network::{self, DEFAULT_NETWORK_NAME, bridge},
    paths::Roots,
    publish,
    state::{Mode, Sandbox, State, Store},
    validate,
};
use wire::{CniError, CniResult, NetConf, code};

/// The runtime's `CNI_*` variables.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok();
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }
}

/// The binary's entry point.
pub fn main() -> i32 {
    // The resolver netpath starts runs the starting binary's `dns-serve`.
    if std::env::args().nth(1).as_deref() == Some("dns-serve") {
        return crate::cli::main();
    }
    let mut input = String::new();
    let outcome = match std::io::stdin().read_to_string(&mut input) {
        Ok(_) => run(&Env::from_process(), &input),
        Err(e) => Err(CniError::new(code::IO_FAILURE, "reading the network configuration").details(e.to_string())),
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            0
        }
        Ok(None) => 0,
        Err(mut e) => {
            if e.cni_version.is_empty() {
                e.cni_version = config_version(&input);
            }
            println!("{}", serde_json::to_string(&e).expect("serialisable"));
            1
        }
    }
}

/// The configuration's `cniVersion` (for the error object), else the newest.
fn config_version(input: &str) -> String {
    serde_json::from_str::<Value>(input)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().filter(|v| wire::supported(v)).map(String::from))
        .unwrap_or_else(|| wire::SUPPORTED_VERSIONS.last().expect("one").to_string())
}

/// Runs one command; `Some(json)` is what goes to stdout.
pub fn run(env: &Env, input: &str) -> Result<Option<String>, CniError> {
    let command =
        env.command.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| invalid_env("CNI_COMMAND", "not set"))?;
    let raw: Value = serde_json::from_str(input)
        .map_err(|e| CniError::new(code::DECODE, "the network configuration is not JSON").details(e.to_string()))?;
    let version = raw["cniVersion"].as_str().unwrap_or_default().to_string();
    if command == "VERSION" {
        let shown = if version.is_empty() { config_version("") } else { version };
        return Ok(Some(json!({"cniVersion": shown, "supportedVersions": wire::SUPPORTED_VERSIONS}).to_string()));
    }
    if version.is_empty() {
        return Err(CniError::new(code::INVALID_CONFIG, "the network configuration has no cniVersion"));
    }
    if !wire::supported(&version) {
        return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("CNI version {version} is not supported"))
            .details(format!("supported versions: {}", wire::SUPPORTED_VERSIONS.join(", "))));
    }
    let conf: NetConf = serde_json::from_value(raw)
        .map_err(|e| CniError::new(code::DECODE, "the network configuration does not decode").details(e.to_string()))?;
    if conf.plugin_type != "netpath" {
        return Err(invalid_config(format!("type is {:?}, this plugin is \"netpath\"", conf.plugin_type)));
    }
    validate::name(&conf.name).map_err(|e| invalid_config(format!("network name: {e}")))?;
    let roots = roots(&conf.netpath);
    match command {
        "ADD" => add(env, &conf, roots).map(|r| Some(serde_json::to_string(&r).expect("serialisable"))),
        "DEL" => del(env, &conf, roots).map(|()| None),
        "CHECK" => check(env, &conf, roots).map(|()| None),
        "STATUS" | "GC" if !wire::at_least(&conf.cni_version, "1.1.0") => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("{command} needs cniVersion 1.1.0 or later, the configuration says {}", conf.cni_version),
        )),
        "STATUS" => status(roots).map(|()| None),
        "GC" => gc(&conf, roots).map(|()| None),
        other => Err(invalid_env("CNI_COMMAND", &format!("unknown command {other:?}"))),
    }
}

fn invalid_env(var: &str, why: &str) -> CniError {
    CniError::new(code::INVALID_ENV, format!("{var}: {why}"))
}

fn invalid_config(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// netpath's own failure: the first line as `msg`, the whole chain as `details`.
fn failed(e: anyhow::Error) -> CniError {
    let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
    CniError::new(code::NETPATH_FAILED, chain[0].clone()).details(chain.join(": "))
}

/// Where the netpath instance lives (see the module documentation).
pub fn roots(conf: &wire::RootsConf) -> Roots {
    let pick = |key: &Option<String>, env: &str| -> Option<PathBuf> {
        key.clone().or_else(|| std::env::var(env).ok()).filter(|v| !v.is_empty()).map(PathBuf::from)
    };
    Roots {
        state: pick(&conf.state_dir, Roots::STATE_ENV).unwrap_or_else(|| Roots::DEFAULT_STATE.into()),
        run: pick(&conf.run_dir, Roots::RUN_ENV).unwrap_or_else(|| Roots::DEFAULT_RUN.into()),
        bpf: pick(&conf.bpf_dir, Roots::BPF_ENV).unwrap_or_else(|| Roots::DEFAULT_BPF.into()),
        config: pick(&conf.config, Roots::CONFIG_ENV).unwrap_or_else(|| Roots::DEFAULT_CONFIG.into()),
        cgroup: pick(&conf.cgroup, Roots::CGROUP_ENV).unwrap_or_else(Roots::default_cgroup),
    }
}

/// The record of one attachment: `cni-ID-IFNAME`, or for an ID longer than
/// 32 characters (Podman's and Kubernetes' are 64) its first 12 and 8 hex
/// digits of its SHA-256, which keeps the name readable, unique and a
/// valid DNS label (containerd's `NAMESPACE-ID` share their first 12).
pub fn record_name(container_id: &str, ifname: &str) -> String {
    use sha2::Digest;
    if container_id.chars().count() <= 32 {
        return format!("cni-{container_id}-{ifname}");
    }
    let short: String = container_id.chars().take(12).collect();
    let digest = sha2::Sha256::digest(container_id.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("cni-{short}-{tag}-{ifname}")
}

/// CNI_CONTAINERID and CNI_IFNAME, checked as the spec's libraries check them.
fn attachment_ids(env: &Env) -> Result<(String, String), CniError> {
    let id =
        env.container_id.clone().filter(|s| !s.is_empty()).ok_or_else(|| invalid_env("CNI_CONTAINERID", "not set"))?;
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(invalid_env("CNI_CONTAINERID", &format!("{id:?} is not [a-zA-Z0-9][a-zA-Z0-9_.-]*")));
    }
    let ifname = env.ifname.clone().filter(|s| !s.is_empty()).ok_or_else(|| invalid_env("CNI_IFNAME", "not set"))?;
    validate::ifname(&ifname).map_err(|e| invalid_env("CNI_IFNAME", &e.to_string()))?;
    validate::name(&record_name(&id, &ifname)).map_err(|e| invalid_env("CNI_IFNAME", &e.to_string()))?;
    Ok((id, ifname))
}

/// `CNI_ARGS`: `K=V;K=V` (Podman: `IgnoreUnknown=1;K8S_POD_NAME=...;IP=...`).
fn cni_args(env: &Env) -> Result<Vec<(String, String)>, CniError> {
    let Some(args) = env.args.as_deref().filter(|a| !a.is_empty()) else { return Ok(Vec::new()) };
    args.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| invalid_env("CNI_ARGS", &format!("{kv:?} is not KEY=VALUE")))
        })
        .collect()
}

/// The attach request ADD makes from the configuration, capabilities and
/// CNI_ARGS; every value checked here, before anything changes.
fn request(env: &Env, conf: &NetConf, netns_path: PathBuf) -> Result<AttachRequest, CniError> {
    let (id, ifname) = attachment_ids(env)?;
    let args = cni_args(env)?;
    let arg = |key: &str| args.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let rc = &conf.runtime_config;
    let ip = match rc.ips.iter().find_map(|a| a.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok())) {
        Some(ip) => Some(ip.to_string()),
        None if !rc.ips.is_empty() => return Err(invalid_config(format!("ips: no IPv4 address in {:?}", rc.ips))),
        None => arg("IP"),
    };
    if let Some(ip) = &ip {
        validate::ipv4(ip, "IP address").map_err(|e| invalid_config(e.to_string()))?;
    }
    let mac = rc.mac.clone().or_else(|| arg("MAC"));
    if let Some(mac) = &mac {
        validate::mac(mac).map_err(|e| invalid_config(e.to_string()))?;
    }
    let mut aliases = rc.aliases.get(&conf.name).cloned().unwrap_or_default();
    // Podman names the container in K8S_POD_NAME: the name it answers to.
    if let Some(pod) = arg("K8S_POD_NAME").filter(|p| validate::name(p).is_ok() && conf.name != DEFAULT_NETWORK_NAME) {
        if !aliases.contains(&pod) {
            aliases.push(pod);
        }
    }
    for a in &aliases {
        validate::name(a).map_err(|e| invalid_config(format!("aliases: {e}")))?;
    }
    let mut specs = Vec::new();
    for m in &rc.port_mappings {
        let proto = m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
        let host_ip = m.host_ip.as_deref().filter(|h| !h.is_empty()).map(|h| format!("{h}:")).unwrap_or_default();
        let spec = if m.host_port == 0 {
            format!("{host_ip}{}/{proto}", m.container_port)
        } else {
            format!("{host_ip}{}:{}/{proto}", m.host_port, m.container_port)
        };
        publish::parse(&spec).map_err(|e| invalid_config(format!("portMappings: {e}")))?;
        specs.push(spec);
    }
    Ok(AttachRequest {
        name: record_name(&id, &ifname),
        network: conf.name.clone(),
        ip,
        mac,
        aliases,
        publish: specs,
        owner: external::OWNER_CNI.into(),
        mover: Mover::Netpath { netns: netns_path, ifname },
    })
}

/// What `network create` gets from the configuration.
fn create_request(conf: &NetConf) -> network::CreateRequest {
    let mut options: Vec<String> = conf.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(icc) = conf.icc {
        options.push(format!("{}={icc}", bridge::OPT_ICC));
    }
    if let Some(masq) = conf.masquerade {
        options.push(format!("{}={masq}", bridge::OPT_MASQUERADE));
    }
    network::CreateRequest {
        name: conf.name.clone(),
        driver: None,
        subnet: conf.subnet.clone(),
        gateway: conf.gateway.clone(),
        ip_range: conf.ip_range.clone(),
        mtu: conf.mtu,
        internal: conf.internal,
        options,
        labels: vec!["created-by=netpath-cni".into()],
        engine_ipam: false,
    }
}

fn add(env: &Env, conf: &NetConf, roots: Roots) -> Result<CniResult, CniError> {
    let spec = env.netns.clone().filter(|s| !s.is_empty()).ok_or_else(|| invalid_env("CNI_NETNS", "not set"))?;
    let netns_path = external::netns_path(&spec).map_err(|e| invalid_env("CNI_NETNS", &e.to_string()))?;
    let req = request(env, conf, netns_path)?;
    let host = Host::open(roots).map_err(failed)?;
    recover(&host.roots);
    let (store, mut state) = Store::open(&host.roots).map_err(failed)?;
    // The network as it is, or as the first ADD will make it: the whole
    // request is checked against it before anything is made.
    let planned = match state.networks.get(&conf.name) {
        Some(net) => {
            if let Some(subnet) = &conf.subnet {
                let want = validate::subnet(subnet).map_err(|e| invalid_config(e.to_string()))?;
                if want != net.subnet {
                    return Err(invalid_config(format!(
                        "network {} exists with subnet {}, the configuration says {want}",
                        net.name, net.subnet
                    )));
                }
            }
            None
        }
        None if conf.name == DEFAULT_NETWORK_NAME => None,
        None => {
            let subnets = network::host_subnets(&host).map_err(failed)?;
            Some(
                network::plan_on(&state, &host.config, &subnets, &create_request(conf))
                    .map_err(|e| invalid_config(e.to_string()))?,
            )
        }
    };
    if let Some(existing) = state.sandboxes.get(&req.name) {
        return Err(CniError::new(
            code::NETPATH_FAILED,
            format!("{} is attached already (record {})", env.ifname.as_deref().unwrap_or_default(), existing.name),
        ));
    }
    let mut trial = state.clone();
    if let Some(net) = &planned {
        trial.networks.insert(net.name.clone(), net.clone());
    }
    // Planned once, against the state as it will be: making the planned
    // network records it exactly as `trial` holds it.
    let plan = external::plan(&host.config, &host.roots, &trial, &req).map_err(failed)?;
    if let Some(net) = planned {
        network::create_planned(&host, &store, &mut state, net).map_err(failed)?;
        store.save(&state).map_err(failed)?;
    }
    let attached = external::apply(&host, &store, &mut state, &req, plan);
    store.save(&state).map_err(failed)?;
    let sandbox = attached.map_err(failed)?;
    result(&host, &state, &sandbox, &conf.cni_version).map_err(failed)
}

/// Finishes or rolls back what a crashed command left (as every CLI command does first).
fn recover(roots: &Roots) {
    if let Err(e) = crate::system::recover(roots) {
        eprintln!("netpath-cni: warning: {e:#}");
    }
}

/// ADD's result for `sandbox`, in the shape of `version`.
pub fn result(host: &Host, state: &State, sandbox: &Sandbox, version: &str) -> anyhow::Result<CniResult> {
    let att =
        sandbox.attachments.first().ok_or_else(|| anyhow::anyhow!("sandbox {} has no interface", sandbox.name))?;
    let net = state.network(&att.network)?;
    let routed = netns::run_in(&sandbox.netns, || {
        let rtnl = Rtnl::new()?;
        let index = rtnl.require_index(&att.ifname)?;
        Ok(rtnl.default_route_links()?.contains(&index))
    })?;
    let pre_1 = !wire::at_least(version, "1.0.0");
    Ok(CniResult {
        cni_version: version.to_string(),
        interfaces: vec![
            wire::Interface {
                name: att.host_ifname.clone(),
                mac: validate::format_mac(&host.rtnl.mac(&att.host_ifname)?),
                mtu: Some(net.mtu),
                sandbox: None,
            },
            wire::Interface {
                name: att.ifname.clone(),
                mac: validate::format_mac(&att.mac),
                mtu: Some(net.mtu),
                sandbox: Some(sandbox.netns.display().to_string()),
            },
        ],
        ips: vec![wire::IpConfig {
            version: pre_1.then(|| "4".to_string()),
            address: format!("{}/{}", att.ip, net.subnet.prefix()),
            gateway: Some(net.gateway.to_string()),
            interface: 1,
        }],
        routes: if routed {
            vec![wire::Route { dst: "0.0.0.0/0".into(), gw: Some(net.gateway.to_string()) }]
        } else {
            Vec::new()
        },
        dns: wire::Dns {
            nameservers: if net.has_resolver() { vec![net.gateway.to_string()] } else { Vec::new() },
            search: Vec::new(),
        },
    })
}

/// Whether the instance has a state at all (a DEL or GC before any ADD has
/// nothing to do, and must not create one).
fn has_state(roots: &Roots) -> bool {
    roots.state_file().exists()
}

fn del(env: &Env, conf: &NetConf, roots: Roots) -> Result<(), CniError> {
    let (id, ifname) = attachment_ids(env)?;
    if !has_state(&roots) {
        return Ok(());
    }
    let host = Host::open(roots).map_err(failed)?;
    recover(&host.roots);
    let (store, mut state) = Store::open(&host.roots).map_err(failed)?;
    let name = record_name(&id, &ifname);
    // Idempotent: an attachment already gone (or never made) is done. The
    // namespace is not needed (containerd sends an empty CNI_NETNS).
    match state.sandboxes.get(&name) {
        Some(s) if is_cni(s) && s.attachment(&conf.name).is_some() => {}
        _ => return Ok(()),
    }
    let detached = external::detach(&host, &store, &mut state, &name);
    store.save(&state).map_err(failed)?;
    detached.map_err(failed)
}

fn is_cni(sandbox: &Sandbox) -> bool {
    matches!(&sandbox.mode, Mode::External { owner } if owner == external::OWNER_CNI)
}

fn check_failed(msg: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

fn check(env: &Env, conf: &NetConf, roots: Roots) -> Result<(), CniError> {
    let (id, ifname) = attachment_ids(env)?;
    let spec = env.netns.clone().filter(|s| !s.is_empty()).ok_or_else(|| invalid_env("CNI_NETNS", "not set"))?;
    let netns_path = external::netns_path(&spec).map_err(|e| invalid_env("CNI_NETNS", &e.to_string()))?;
    if !has_state(&roots) {
        return Err(check_failed(format!("no attachment of {id} ({ifname}) on network {}", conf.name)));
    }
    let host = Host::open(roots).map_err(failed)?;
    let (_store, state) = Store::open(&host.roots).map_err(failed)?;
    let name = record_name(&id, &ifname);
    let sandbox = state
        .sandboxes
        .get(&name)
        .filter(|s| is_cni(s))
        .ok_or_else(|| check_failed(format!("no attachment of {id} ({ifname}) on network {}", conf.name)))?;
    let att = sandbox
        .attachment(&conf.name)
        .ok_or_else(|| check_failed(format!("{name} is not on network {}", conf.name)))?;
    if !external::same_namespace(&sandbox.netns, &netns_path) {
        return Err(check_failed(format!("{name} was added in {}, not {spec}", sandbox.netns.display())));
    }
    let net = state.network(&conf.name).map_err(failed)?;
    let inside = netns::run_in(&netns_path, || {
        let rtnl = Rtnl::new()?;
        let Some(index) = rtnl.index(&att.ifname)? else { return Ok(None) };
        Ok(Some((rtnl.mac(&att.ifname)?, rtnl.ipv4_addresses(index)?)))
    })
    .map_err(failed)?;
    let Some((mac, addrs)) = inside else {
        return Err(check_failed(format!("interface {} is missing from {spec}", att.ifname)));
    };
    if mac != att.mac {
        return Err(check_failed(format!("interface {} has MAC {}", att.ifname, validate::format_mac(&mac))));
    }
    if !addrs.contains(&(att.ip, net.subnet.prefix())) {
        return Err(check_failed(format!(
            "interface {} lost its address {}/{}",
            att.ifname,
            att.ip,
            net.subnet.prefix()
        )));
    }
    if host.rtnl.index(&att.host_ifname).map_err(failed)?.is_none() {
        return Err(check_failed(format!("host interface {} is missing", att.host_ifname)));
    }
    if host.datapath.is_loaded() {
        let key = netpath_common::EndpointKey { ipv4: att.ip.octets() };
        if host.datapath.endpoints().map_err(failed)?.get(&key, 0).is_err() {
            return Err(check_failed(format!("the data path has no endpoint for {}", att.ip)));
        }
    }
    // The runtime's cached result must say what netpath has.
    if let Some(prev) = &conf.prev_result {
        let want = format!("{}/{}", att.ip, net.subnet.prefix());
        let listed = prev["ips"].as_array().is_some_and(|ips| ips.iter().any(|i| i["address"] == want.as_str()));
        if !listed {
            return Err(check_failed(format!("prevResult does not list {want}")));
        }
    }
    Ok(())
}

/// STATUS: ready when the instance's state can be read and locked and pins
/// can be made (bpffs under the pin directory).
fn status(roots: Roots) -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let bpf_parent = roots.bpf.parent().unwrap_or(Path::new("/"));
    let on_bpffs =
        |p: &Path| nix::sys::statfs::statfs(p).is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
    if !on_bpffs(&roots.bpf) && !on_bpffs(bpf_parent) {
        return Err(unavailable(format!("no bpffs at {}", roots.bpf.display())));
    }
    Host::open(roots.clone()).map_err(|e| unavailable(format!("{e:#}")))?;
    if has_state(&roots) {
        Store::open(&roots).map_err(|e| unavailable(format!("{e:#}")))?;
    }
    Ok(())
}

/// GC: every attachment of this network the runtime no longer lists goes.
fn gc(conf: &NetConf, roots: Roots) -> Result<(), CniError> {
    let valid =
        conf.valid_attachments.as_ref().ok_or_else(|| invalid_config("GC without cni.dev/valid-attachments"))?;
    if !has_state(&roots) {
        return Ok(());
    }
    let keep: Vec<String> = valid.iter().map(|a| record_name(&a.container_id, &a.ifname)).collect();
    let host = Host::open(roots).map_err(failed)?;
    recover(&host.roots);
    let (store, mut state) = Store::open(&host.roots).map_err(failed)?;
    let stale: Vec<String> = state
        .sandboxes
        .values()
        .filter(|s| is_cni(s) && s.attachment(&conf.name).is_some() && !keep.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    let mut teardown = crate::teardown::Teardown::new();
    for name in stale {
        teardown.step(format!("attachment {name}"), external::detach(&host, &store, &mut state, &name));
    }
    store.save(&state).map_err(failed)?;
    teardown.finish().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> Env {
        Env { command: Some(command.into()), ..Default::default() }
    }

    fn code_of(r: Result<Option<String>, CniError>) -> u32 {
        r.expect_err("an error").code
    }

    #[test]
    fn version_answers_without_a_network() {
        let out = run(&env("VERSION"), r#"{"cniVersion":"1.1.0"}"#).unwrap().unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["supportedVersions"].as_array().unwrap().iter().any(|s| s == "1.0.0"));
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        let conf = r#"{"cniVersion":"1.1.0","name":"n1","type":"netpath"}"#;
        assert_eq!(code_of(run(&Env::default(), conf)), code::INVALID_ENV);
        assert_eq!(code_of(run(&env("ADD"), "{not json")), code::DECODE);
        assert_eq!(code_of(run(&env("ADD"), r#"{"cniVersion":"9.9.9","name":"n1","type":"netpath"}"#)), 1);
        assert_eq!(code_of(run(&env("ADD"), r#"{"cniVersion":"1.0.0","name":"n1","type":"bridge"}"#)), 7);
        assert_eq!(code_of(run(&env("ADD"), r#"{"cniVersion":"1.0.0","name":"bad name","type":"netpath"}"#)), 7);
        assert_eq!(code_of(run(&env("STATUS"), r#"{"cniVersion":"1.0.0","name":"n1","type":"netpath"}"#)), 1);
        assert_eq!(code_of(run(&env("FROB"), conf)), code::INVALID_ENV);
        // ADD without CNI_CONTAINERID names the variable.
        let e = run(&Env { netns: Some("/proc/self/ns/net".into()), ..env("ADD") }, conf).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
    }

    #[test]
    fn record_names_are_valid_sandbox_names() {
        assert_eq!(record_name("default-c1", "eth0"), "cni-default-c1-eth0");
        let podman = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let long = record_name(podman, "eth0");
        assert!(long.starts_with("cni-0123456789ab-") && long.ends_with("-eth0") && long.len() == 30, "{long}");
        let other = format!("{}0", &podman[..63]);
        assert_ne!(record_name(&other, "eth0"), long, "IDs sharing their first 12 characters stay apart");
        assert!(validate::name(&record_name("a", "net1")).is_ok());
    }
}
