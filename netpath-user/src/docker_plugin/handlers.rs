//! Each remote driver call mapped onto the library, under the state lock,
//! as a CLI command would do it: networks through `network::create` /
//! `network::remove`, endpoints through `external::attach` (the engine
//! moving the interface in) and `sandbox::remove`, `-p` through
//! `sandbox::publish_external`.
//!
//! Docker's IPAM allocates the addresses (its default driver): `--subnet`,
//! `--gateway`, `--ip-range`, `--aux-address` and `docker run --ip` work as
//! with its bridge driver, Docker keeps its allocations across restarts,
//! and netpath records the address it was handed.
//!
//! Calls may come again (Docker retries, a restarted plugin sees
//! calls for work already done) or for things netpath never made (a
//! failed create's cleanup): creating what exists with the same ID and
//! deleting what does not exist both succeed.
use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use super::{OWNER, protocol::*};
use crate::{
    external::{self, AttachRequest, Mover},
    host::Host,
    network::{self, bridge},
    paths::Roots,
    publish::{self, Proto, Spec},
    sandbox,
    state::{LABEL_ENGINE_NETWORK, Mode, Network, State, Store},
    system, validate,
};

/// What goes back to Docker: an HTTP status and a JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    fn ok(value: &impl Serialize) -> Reply {
        Reply { status: 200, body: serde_json::to_vec(value).expect("serializable") }
    }

    fn err(status: u16, message: String) -> Reply {
        Reply { status, body: serde_json::to_vec(&ErrorResponse { err: message }).expect("serializable") }
    }
}

/// Answers one call: `method` is the request path without its `/`
/// (`NetworkDriver.Join`).
pub fn handle(roots: &Roots, method: &str, body: &[u8]) -> Reply {
    let result = match method {
        "Plugin.Activate" => to_value(&ActivateResponse { implements: vec!["NetworkDriver"] }),
        "NetworkDriver.GetCapabilities" => {
            to_value(&CapabilitiesResponse { scope: "local", connectivity_scope: "local" })
        }
        "NetworkDriver.CreateNetwork" => call(roots, body, create_network),
        "NetworkDriver.DeleteNetwork" => call(roots, body, delete_network),
        "NetworkDriver.CreateEndpoint" => call(roots, body, create_endpoint),
        "NetworkDriver.DeleteEndpoint" => call(roots, body, delete_endpoint),
        "NetworkDriver.Join" => call(roots, body, join),
        "NetworkDriver.Leave" => call(roots, body, leave),
        "NetworkDriver.ProgramExternalConnectivity" => call(roots, body, program_external_connectivity),
        "NetworkDriver.RevokeExternalConnectivity" => call(roots, body, revoke_external_connectivity),
        "NetworkDriver.EndpointOperInfo" => to_value(&EndpointInfoResponse { value: Map::new() }),
        // Swarm's global-scope hooks and discovery notifications: nothing
        // for a local driver to do.
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork" => Ok(Value::Object(Map::new())),
        other => return Reply::err(404, format!("netpath: unknown plugin call {other:?}")),
    };
    match result {
        Ok(value) => Reply::ok(&value),
        Err(e) => {
            Reply::err(500, format!("netpath: {}", e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")))
        }
    }
}

fn to_value(v: &impl Serialize) -> Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// Parses the request, then runs `f` the way a CLI command runs: work a
/// killed plugin or command left is finished first, then the state is
/// opened and locked for the whole call.
fn call<Req: DeserializeOwned, Resp: Serialize>(
    roots: &Roots,
    body: &[u8],
    f: fn(&Host, &Store, &mut State, Req) -> Result<Resp>,
) -> Result<Value> {
    let req: Req = serde_json::from_slice(body).context("malformed request")?;
    if let Err(e) = system::recover(roots) {
        eprintln!("netpath docker-plugin: warning: {e:#}");
    }
    let host = Host::open(roots.clone())?;
    let (store, mut state) = Store::open(&host.roots)?;
    to_value(&f(&host, &store, &mut state, req)?)
}

#[derive(Serialize)]
struct Empty {}

/// Docker's IDs are 64 hex digits; the names derive from their first 12.
fn short_id(id: &str) -> Result<&str> {
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid ID {id:?}: Docker's IDs are hexadecimal");
    }
    Ok(&id[..12])
}

/// The netpath network of a Docker network: named after its ID (Docker
/// does not tell plugins the name), the whole ID in a label.
pub fn network_name(docker_id: &str) -> Result<String> {
    Ok(format!("docker-{}", short_id(docker_id)?))
}

/// The sandbox record of a Docker endpoint, and its devices.
pub fn sandbox_name(endpoint_id: &str) -> Result<String> {
    Ok(format!("docker-{}", short_id(endpoint_id)?))
}

fn peer_ifname(endpoint_id: &str) -> String {
    format!("vnp{}", &endpoint_id[..11])
}

fn find_network<'a>(state: &'a State, docker_id: &str) -> Option<&'a Network> {
    state.networks.values().find(|n| n.labels.get(LABEL_ENGINE_NETWORK).is_some_and(|id| id == docker_id))
}

fn require_network<'a>(state: &'a State, docker_id: &str) -> Result<&'a Network> {
    find_network(state, docker_id)
        .with_context(|| format!("network {docker_id} not found (created without the plugin?)"))
}

/// An option value as `-o` gave it (Docker passes strings; anything else
/// is taken as its JSON text).
fn option_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn option_flag(options: &Map<String, Value>, key: &str) -> bool {
    match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Docker's request as a `network create` one: the pool and gateway its
/// IPAM chose, `-o` options in Docker's bridge driver spellings (ICC,
/// masquerade, MTU, host binding), `--internal`.
pub fn create_request(req: &CreateNetworkRequest) -> Result<network::CreateRequest> {
    let name = network_name(&req.network_id)?;
    if option_flag(&req.options, options::ENABLE_IPV6) || !req.ipv6_data.is_empty() {
        bail!("IPv6 networks are not supported yet");
    }
    let pool = match req.ipv4_data.as_slice() {
        [one] => one,
        [] => bail!("no IPv4 pool given (Docker's IPAM gives one)"),
        _ => bail!("one IPv4 subnet per network is supported, not {}", req.ipv4_data.len()),
    };
    let gateway = pool.gateway.as_deref().map(|g| g.split_once('/').map_or(g, |(ip, _)| ip).to_string());
    let generic = match req.options.get(options::GENERIC) {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(other) => bail!("malformed {}: {other}", options::GENERIC),
    };
    let generic: BTreeMap<String, String> = generic.iter().map(|(k, v)| (k.clone(), option_text(v))).collect();
    if generic.contains_key(bridge::OPT_BRIDGE_NAME) {
        // Docker's own bridge driver may already use the name.
        bail!("option {} is not supported: netpath names the bridge", bridge::OPT_BRIDGE_NAME);
    }
    Ok(network::CreateRequest {
        name,
        driver: Some(bridge::DRIVER_NAME.to_string()),
        subnet: Some(pool.pool.clone()),
        gateway,
        ip_range: None,
        mtu: None,
        internal: option_flag(&req.options, options::INTERNAL),
        options: generic.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        labels: vec![format!("{LABEL_ENGINE_NETWORK}={}", req.network_id)],
        engine_ipam: true,
    })
}

fn create_network(host: &Host, store: &Store, state: &mut State, req: CreateNetworkRequest) -> Result<Empty> {
    if find_network(state, &req.network_id).is_some() {
        return Ok(Empty {});
    }
    let create = create_request(&req)?;
    network::create(host, store, state, &create)?;
    store.save(state)?;
    Ok(Empty {})
}

fn delete_network(host: &Host, store: &Store, state: &mut State, req: NetworkRequest) -> Result<Empty> {
    let Some(net) = find_network(state, &req.network_id).cloned() else { return Ok(Empty {}) };
    // Docker removes a network only once its endpoints are gone: records
    // still on it are leftovers of calls that failed half-way.
    let leftovers: Vec<String> = state
        .attachments_on(&net.name)
        .filter(|(s, _)| s.mode == Mode::External { owner: OWNER.to_string() })
        .map(|(s, _)| s.name.clone())
        .collect();
    for name in leftovers {
        sandbox::remove(host, store, state, &name, true)?;
    }
    let removed = network::remove(host, store, state, &net.name, false);
    store.save(state)?;
    removed.map(|()| Empty {})
}

/// The address Docker's IPAM chose, `10.88.0.2/24`.
fn endpoint_address(iface: &EndpointInterface) -> Result<Ipv4Addr> {
    let text = iface.address.split_once('/').map_or(iface.address.as_str(), |(ip, _)| ip);
    validate::ipv4(text, "endpoint address")
}

fn create_endpoint(
    host: &Host,
    store: &Store,
    state: &mut State,
    req: CreateEndpointRequest,
) -> Result<CreateEndpointResponse> {
    let name = sandbox_name(&req.endpoint_id)?;
    let iface = req.interface.context("no interface given (Docker's IPAM gives an address)")?;
    if !iface.address_ipv6.is_empty() {
        bail!("IPv6 addresses are not supported yet");
    }
    let given_mac = (!iface.mac_address.is_empty()).then(|| validate::mac(&iface.mac_address)).transpose()?;
    let existing = state.sandboxes.get(&name).filter(|s| s.id == req.endpoint_id).cloned();
    let sandbox = match existing {
        Some(s) => s,
        None => {
            let net = require_network(state, &req.network_id)?;
            let attach = AttachRequest {
                name: name.clone(),
                network: net.name.clone(),
                ip: Some(endpoint_address(&iface)?.to_string()),
                mac: given_mac.as_ref().map(validate::format_mac),
                aliases: Vec::new(),
                publish: Vec::new(),
                owner: OWNER.to_string(),
                mover: Mover::Engine { endpoint_id: req.endpoint_id.clone(), peer: peer_ifname(&req.endpoint_id) },
            };
            let sandbox = external::attach(host, store, state, &attach)?;
            store.save(state)?;
            sandbox
        }
    };
    // The MAC goes back only when Docker gave none (it refuses a change).
    let interface = given_mac.is_none().then(|| EndpointInterface {
        mac_address: validate::format_mac(&sandbox.attachments[0].mac),
        ..Default::default()
    });
    Ok(CreateEndpointResponse { interface })
}

fn delete_endpoint(host: &Host, store: &Store, state: &mut State, req: EndpointRequest) -> Result<Empty> {
    let name = sandbox_name(&req.endpoint_id)?;
    if state.sandboxes.get(&name).is_some_and(|s| s.id == req.endpoint_id) {
        let removed = sandbox::remove(host, store, state, &name, true);
        store.save(state)?;
        removed?;
    }
    Ok(Empty {})
}

fn join(_host: &Host, store: &Store, state: &mut State, req: JoinRequest) -> Result<JoinResponse> {
    let name = sandbox_name(&req.endpoint_id)?;
    let mut sandbox = state.sandbox(&name)?.clone();
    let net = require_network(state, &req.network_id)?;
    // Docker's bridge driver gives an internal network's containers no
    // gateway; others route through the bridge's address.
    let gateway = if net.internal { String::new() } else { net.gateway.to_string() };
    sandbox.netns = PathBuf::from(&req.sandbox_key);
    state.sandboxes.insert(name, sandbox);
    store.save(state)?;
    Ok(JoinResponse {
        interface_name: InterfaceName { src_name: peer_ifname(&req.endpoint_id), dst_prefix: "eth".into() },
        gateway,
    })
}

/// Docker has moved the device back into the host namespace under its old
/// name; it goes with the endpoint.
fn leave(_host: &Host, store: &Store, state: &mut State, req: EndpointRequest) -> Result<Empty> {
    let name = sandbox_name(&req.endpoint_id)?;
    if let Some(s) = state.sandboxes.get_mut(&name) {
        s.netns = PathBuf::new();
        store.save(state)?;
    }
    Ok(Empty {})
}

/// Docker's port bindings as `-p` specifications.
pub fn port_specs(options: &Map<String, Value>) -> Result<Vec<Spec>> {
    let bindings: Vec<PortBinding> = match options.get(options::PORTMAP) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).with_context(|| format!("malformed {}", options::PORTMAP))?,
    };
    bindings
        .iter()
        .map(|b| {
            let proto = match b.proto {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                p => bail!("publishing IP protocol {p} is not supported: tcp and udp are"),
            };
            if b.port == 0 {
                bail!("invalid container port 0");
            }
            let host_ip = match b.host_ip.as_str() {
                "" => None,
                ip => Some(validate::ipv4(ip, "host IP")?),
            };
            let host = match (b.host_port, b.host_port_end) {
                (0, _) => None,
                (first, last) if last > first => Some((first, last)),
                (first, _) => Some((first, first)),
            };
            Ok(Spec { proto, host_ip, host, container: (b.port, b.port) })
        })
        .collect()
}

fn program_external_connectivity(
    host: &Host,
    store: &Store,
    state: &mut State,
    req: ProgramExternalConnectivityRequest,
) -> Result<Empty> {
    let name = sandbox_name(&req.endpoint_id)?;
    state.sandbox(&name)?;
    let specs = port_specs(&req.options)?;
    sandbox::publish_external(host, store, state, &name, &specs)?;
    Ok(Empty {})
}

fn revoke_external_connectivity(host: &Host, store: &Store, state: &mut State, req: EndpointRequest) -> Result<Empty> {
    let name = sandbox_name(&req.endpoint_id)?;
    if state.sandboxes.contains_key(&name) {
        let result = sandbox::unpublish_external(host, state, &name);
        store.save(state)?;
        result?;
    }
    Ok(Empty {})
}

/// The ports netpath published for the Docker endpoints `endpoint_ids`
/// (a container's, from Docker's API), in `docker port`'s lines.
pub fn describe_ports(state: &State, endpoint_ids: &[String], filter: Option<(u16, Proto)>) -> Vec<String> {
    state
        .sandboxes
        .values()
        .filter(|s| s.attachments.iter().any(|a| endpoint_ids.contains(&a.endpoint_id)))
        .flat_map(|s| publish::describe(&s.published, filter))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";

    #[test]
    fn a_docker_network_becomes_a_bridge_network_request() {
        let req: CreateNetworkRequest = serde_json::from_value(serde_json::json!({
            "NetworkID": ID,
            "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.internal": true,
                        "com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "false",
                                                        "com.docker.network.driver.mtu": "1400"}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "10.88.0.1/24", "Pool": "10.88.0.0/24"}],
            "IPv6Data": []
        }))
        .unwrap();
        let create = create_request(&req).unwrap();
        assert_eq!(create.name, "docker-3f2a9c1b7d4e");
        assert_eq!((create.subnet.as_deref(), create.gateway.as_deref()), (Some("10.88.0.0/24"), Some("10.88.0.1")));
        assert!(create.internal && create.engine_ipam);
        assert!(create.options.contains(&"com.docker.network.bridge.enable_icc=false".to_string()));
        assert_eq!(create.labels, vec![format!("{LABEL_ENGINE_NETWORK}={ID}")]);
        // Planned as `network create` would: options parsed by the bridge driver.
        let net = network::plan(&State::default(), &crate::config::Config::default(), &create).unwrap();
        assert_eq!((net.mtu, net.subnet.to_string()), (1400, "10.88.0.0/24".to_string()));
        let mut v6 = req;
        v6.options.insert(options::ENABLE_IPV6.into(), true.into());
        assert!(create_request(&v6).unwrap_err().to_string().contains("IPv6"));
    }

    #[test]
    fn docker_port_bindings_become_publish_specs() {
        let options: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 9000, "HostPortEnd": 9009}
            ]
        }))
        .unwrap();
        let specs = port_specs(&options).unwrap();
        assert_eq!(specs[0], publish::parse("8080:80").unwrap());
        assert_eq!(specs[1], publish::parse("80").unwrap());
        assert_eq!(specs[2], publish::parse("127.0.0.1:9000-9009:53/udp").unwrap());
        let sctp = serde_json::json!({"com.docker.network.portmap": [{"Proto": 132, "Port": 80}]});
        assert!(port_specs(sctp.as_object().unwrap()).is_err());
        assert!(port_specs(&Map::new()).unwrap().is_empty());
    }

    #[test]
    fn names_derive_from_docker_ids() {
        assert_eq!(sandbox_name(ID).unwrap(), "docker-3f2a9c1b7d4e");
        assert_eq!(sandbox::host_ifname(ID), "veth3f2a9c1");
        assert!(peer_ifname(ID).len() <= 15);
        assert!(network_name("not-hex-at-all!").is_err());
        assert!(network_name("abc").is_err());
    }
}
