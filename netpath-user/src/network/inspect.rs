//! `network inspect` output, shaped like Docker's.
use serde_json::{Value, json};

use crate::{
    state::{Network, State},
    validate::format_mac,
};

pub fn document(state: &State, net: &Network) -> Value {
    let containers: serde_json::Map<String, Value> = state
        .attachments_on(&net.name)
        .map(|(s, a)| {
            (
                s.id.clone(),
                json!({
                    "Name": s.name,
                    "EndpointID": a.endpoint_id,
                    "MacAddress": format_mac(&a.mac),
                    "IPv4Address": format!("{}/{}", a.ip, net.subnet.prefix()),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let mut ipam = json!({"Subnet": net.subnet.to_string()});
    if net.show_gateway {
        ipam["Gateway"] = json!(net.gateway.to_string());
    }
    if let Some(range) = net.ip_range {
        ipam["IPRange"] = json!(range.to_string());
    }
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": super::scope(net),
        "Driver": net.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": [ipam]},
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": net.options,
        "Labels": net.labels,
        "Bridge": net.bridge,
        "MTU": net.mtu,
    })
}
