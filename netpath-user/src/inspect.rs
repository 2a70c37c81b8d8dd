//! `netpath inspect SANDBOX`: a sandbox in the shape of Docker 20.10's
//! `docker inspect CONTAINER`, the parts networking owns — `Id`, `Name`
//! (with Docker's leading `/`), `State`, `Config`, `HostConfig` (network
//! mode, port bindings, links, DNS, extra hosts) and `NetworkSettings`
//! (`IPAddress`, `Gateway`, `MacAddress`, `Ports`, `Networks`, ...) — so
//! that `-f '{{.NetworkSettings.IPAddress}}'` and the other templates
//! people use print what they print with Docker.
//!
//! As with Docker, the top-level `IPAddress`, `Gateway`, `MacAddress` and
//! `EndpointID` of `NetworkSettings` describe the default `bridge` network
//! only (empty on user-defined networks: read those under `Networks`), and
//! on user-defined networks each network's `Aliases` end with the short ID.
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    network::DEFAULT_NETWORK_NAME,
    publish::{Proto, Published},
    sandbox,
    state::{Attachment, Mode, Sandbox, State},
    validate::format_mac,
};

/// `80/tcp`-style keys of `Ports`, `PortBindings` and `ExposedPorts`.
fn port_key(port: u16, proto: Proto) -> String {
    format!("{port}/{}", proto.name())
}

/// Docker's `PortMap`: each container port with its host bindings, ports
/// that are only exposed with `null`.
fn port_map(published: &[Published], expose: &[(u16, Proto)]) -> Map<String, Value> {
    let mut ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in published {
        for i in 0..m.port_count() {
            ports.entry(port_key(m.container_first + i, m.proto)).or_default().push(json!({
                "HostIp": m.host_ip.to_string(),
                "HostPort": (m.host_first + i).to_string(),
            }));
        }
    }
    let mut map: Map<String, Value> = ports.into_iter().map(|(k, v)| (k, Value::Array(v))).collect();
    for &(port, proto) in expose {
        map.entry(port_key(port, proto)).or_insert(Value::Null);
    }
    map
}

fn endpoint(state: &State, s: &Sandbox, a: &Attachment) -> Value {
    let net = state.networks.get(&a.network);
    let is_default = a.network == DEFAULT_NETWORK_NAME;
    let aliases = if is_default {
        Value::Null
    } else {
        let mut all = a.aliases.clone();
        all.push(s.id[..12].to_string());
        json!(all)
    };
    let links = if is_default && !s.links.is_empty() {
        json!(s.links.iter().map(|l| format!("{}:{}", l.name, l.alias)).collect::<Vec<_>>())
    } else {
        Value::Null
    };
    json!({
        "IPAMConfig": null,
        "Links": links,
        "Aliases": aliases,
        "NetworkID": net.map_or("", |n| n.id.as_str()),
        "EndpointID": a.endpoint_id,
        "Gateway": net.map_or(String::new(), |n| n.gateway.to_string()),
        "IPAddress": a.ip.to_string(),
        "IPPrefixLen": net.map_or(0, |n| n.subnet.prefix()),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": format_mac(&a.mac),
        "DriverOpts": null,
    })
}

/// Docker's `State.Status` for a sandbox: `running` while its detached
/// command runs, `exited` after it ended, `created` when it never had one.
fn status(s: &Sandbox) -> &'static str {
    match (sandbox::is_running(s), s.pid) {
        (true, _) => "running",
        (false, Some(_)) => "exited",
        (false, None) => "created",
    }
}

pub fn document(state: &State, s: &Sandbox) -> Value {
    let networks: Map<String, Value> =
        s.attachments.iter().map(|a| (a.network.clone(), endpoint(state, s, a))).collect();
    let on_default = s.attachment(DEFAULT_NETWORK_NAME).map(|a| endpoint(state, s, a));
    let top = |key: &str, empty: Value| on_default.as_ref().map_or(empty, |e| e[key].clone());
    let network_mode = match &s.mode {
        Mode::Host => "host".to_string(),
        Mode::Container(owner) => {
            format!("container:{}", state.sandboxes.get(owner).map_or(owner.as_str(), |o| o.id.as_str()))
        }
        Mode::Attached | Mode::External { .. } => match s.attachments.first() {
            None => "none".to_string(),
            Some(a) if a.network == DEFAULT_NETWORK_NAME => "default".to_string(),
            Some(a) => a.network.clone(),
        },
    };
    let ports = port_map(&s.published, &s.expose);
    let exposed: Map<String, Value> = ports.keys().map(|k| (k.clone(), json!({}))).collect();
    let bindings: Map<String, Value> =
        ports.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let running = sandbox::is_running(s);
    json!({
        "Id": s.id,
        "Created": s.created,
        "Path": s.command.first().cloned().unwrap_or_default(),
        "Args": s.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status(s),
            "Running": running,
            "Pid": if running { s.pid.unwrap_or(0) } else { 0 },
        },
        "Name": format!("/{}", s.name),
        "Config": {
            "Hostname": s.hostname,
            "Domainname": "",
            "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
            "Cmd": if s.command.is_empty() { Value::Null } else { json!(s.command) },
        },
        "HostConfig": {
            "NetworkMode": network_mode,
            "PortBindings": bindings,
            "Links": if s.links.is_empty() {
                Value::Null
            } else {
                json!(s.links.iter().map(|l| format!("/{}:/{}/{}", l.name, s.name, l.alias)).collect::<Vec<_>>())
            },
            "Dns": s.host_config.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "DnsSearch": s.host_config.dns_search,
            "DnsOptions": s.host_config.dns_options,
            "ExtraHosts": if s.host_config.extra_hosts.is_empty() {
                Value::Null
            } else {
                json!(s.host_config.extra_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>())
            },
        },
        "NetworkSettings": {
            "Bridge": "",
            "SandboxID": s.id,
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports,
            "SandboxKey": s.netns.display().to_string(),
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": top("EndpointID", json!("")),
            "Gateway": top("Gateway", json!("")),
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": top("IPAddress", json!("")),
            "IPPrefixLen": top("IPPrefixLen", json!(0)),
            "IPv6Gateway": "",
            "MacAddress": top("MacAddress", json!("")),
            "Networks": networks,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    fn sandbox(name: &str, net: &str, ip: [u8; 4]) -> Sandbox {
        serde_json::from_value(json!({
            "name": name,
            "id": format!("{name}0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"),
            "created": "2026-11-30T00:00:00Z",
            "hostname": "h",
            "netns": format!("/run/netpath/netns/{name}"),
            "uts": format!("/run/netpath/uts/{name}"),
            "attachments": [{
                "network": net, "endpoint_id": "e1", "ifname": "eth0", "host_ifname": "vethx",
                "ip": std::net::Ipv4Addr::from(ip).to_string(), "mac": [2, 66, ip[0], ip[1], ip[2], ip[3]],
                "aliases": ["web"],
            }],
            "pid": null,
            "command": [],
            "published": [{"proto": "tcp", "host_ip": "0.0.0.0", "host_first": 8080, "host_last": 8080,
                           "container_first": 80, "range_slot": null}],
            "expose": [[81, "tcp"]],
        }))
        .unwrap()
    }

    fn render(t: &str, doc: &Value) -> String {
        Template::parse(t).unwrap().render(doc).unwrap()
    }

    #[test]
    fn default_network_fills_the_top_level_fields() {
        let s = sandbox("a", "bridge", [172, 17, 0, 2]);
        let doc = document(&State::default(), &s);
        assert_eq!(render("{{.NetworkSettings.IPAddress}}", &doc), "172.17.0.2");
        assert_eq!(render("{{.NetworkSettings.MacAddress}}", &doc), "02:42:ac:11:00:02");
        assert_eq!(render("{{.Name}} {{.HostConfig.NetworkMode}} {{.State.Status}}", &doc), "/a default created");
        assert_eq!(render("{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}", &doc), "8080");
        assert_eq!(
            render("{{json .NetworkSettings.Ports}}", &doc),
            r#"{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}],"81/tcp":null}"#
        );
        assert_eq!(render("{{.NetworkSettings.Networks.bridge.Aliases}}", &doc), "<no value>");
    }

    #[test]
    fn user_networks_are_read_under_networks() {
        let s = sandbox("b", "n1", [10, 1, 0, 2]);
        let doc = document(&State::default(), &s);
        assert_eq!(render("{{.NetworkSettings.IPAddress}}", &doc), "");
        assert_eq!(render("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &doc), "10.1.0.2");
        assert_eq!(render("{{json .NetworkSettings.Networks.n1.Aliases}}", &doc), r#"["web","b0123456789a"]"#);
        assert_eq!(render("{{.HostConfig.NetworkMode}}", &doc), "n1");
    }
}
