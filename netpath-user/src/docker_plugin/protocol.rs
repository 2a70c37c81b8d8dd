//! The remote driver protocol's messages (moby `libnetwork/drivers/remote/api`):
//! JSON bodies POSTed to `/Plugin.Activate` and `/NetworkDriver.*`, answered
//! with `application/vnd.docker.plugins.v1+json`; a failure is `{"Err": ...}`.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Docker's option keys this plugin reads.
pub mod options {
    /// `-o KEY=VALUE` of `docker network create`, as an object.
    pub const GENERIC: &str = "com.docker.network.generic";
    /// `--internal`.
    pub const INTERNAL: &str = "com.docker.network.internal";
    /// `--ipv6`.
    pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
    /// `-p` of `docker run`, in `ProgramExternalConnectivity`.
    pub const PORTMAP: &str = "com.docker.network.portmap";
}

#[derive(Debug, Serialize)]
pub struct ErrorResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[derive(Debug, Serialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct CapabilitiesResponse {
    #[serde(rename = "Scope")]
    pub scope: &'static str,
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: &'static str,
}

/// One address pool Docker's IPAM gave the network.
#[derive(Debug, Default, Deserialize)]
pub struct IpamData {
    #[serde(rename = "AddressSpace", default)]
    pub address_space: String,
    /// The subnet, e.g. `10.88.0.0/24`.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// The gateway with the pool's prefix length, e.g. `10.88.0.1/24`.
    #[serde(rename = "Gateway", default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: Map<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_empty")]
    pub ipv6_data: Vec<IpamData>,
}

#[derive(Debug, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The interface of an endpoint: what Docker's IPAM chose, and what the
/// driver adds (a MAC, when Docker has none).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", default, skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(rename = "MacAddress", default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
    #[serde(rename = "Options", default, deserialize_with = "null_as_empty")]
    pub options: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// `DeleteEndpoint`, `Leave`, `RevokeExternalConnectivity`, `EndpointOperInfo`.
#[derive(Debug, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's network namespace (a path under Docker's exec root).
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

/// The host-side device Docker moves into the container, and the prefix
/// of the name it gets there (`eth` → `eth0`).
#[derive(Debug, Serialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    /// The container's default gateway. Without one Docker would give the
    /// container its own `docker_gwbridge` and publish with iptables.
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

#[derive(Debug, Deserialize)]
pub struct ProgramExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_empty")]
    pub options: Map<String, Value>,
}

/// One `-p` as Docker hands it over: `Proto` is the IP protocol number,
/// `HostPort` 0 means "pick one", `HostPortEnd` ends a host range.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct PortBinding {
    #[serde(rename = "Proto")]
    pub proto: u8,
    #[serde(rename = "IP", default)]
    pub ip: String,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    #[serde(rename = "HostPort", default)]
    pub host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u16,
}

#[derive(Debug, Serialize)]
pub struct EndpointInfoResponse {
    #[serde(rename = "Value")]
    pub value: Map<String, Value>,
}

/// Docker sends `null` for an empty list or map.
fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_docker_sends() {
        // As dockerd 20.10 sends it (see shared/PEERS.md).
        let create: CreateNetworkRequest = serde_json::from_str(
            r#"{"NetworkID":"3f2a","Options":{"com.docker.network.enable_ipv6":false,
                "com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"LocalDefault",
                "Gateway":"10.88.0.1/24","Pool":"10.88.0.0/24"}],"IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(create.ipv4_data[0].pool, "10.88.0.0/24");
        assert_eq!(create.ipv4_data[0].gateway.as_deref(), Some("10.88.0.1/24"));
        let ep: CreateEndpointRequest = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.88.0.2/24","AddressIPv6":"",
                "MacAddress":""},"Options":null}"#,
        )
        .unwrap();
        assert_eq!(ep.interface.unwrap().address, "10.88.0.2/24");
        let ports: Vec<PortBinding> =
            serde_json::from_str(r#"[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":0,"HostPortEnd":0}]"#)
                .unwrap();
        assert_eq!((ports[0].proto, ports[0].port, ports[0].host_port), (6, 80, 0));
    }

    #[test]
    fn answers_in_dockers_field_names() {
        let join = JoinResponse {
            interface_name: InterfaceName { src_name: "vc0123".into(), dst_prefix: "eth".into() },
            gateway: "10.88.0.1".into(),
        };
        assert_eq!(
            serde_json::to_string(&join).unwrap(),
            r#"{"InterfaceName":{"SrcName":"vc0123","DstPrefix":"eth"},"Gateway":"10.88.0.1"}"#
        );
        let mac = CreateEndpointResponse {
            interface: Some(EndpointInterface { mac_address: "02:42:0a:58:00:02".into(), ..Default::default() }),
        };
        assert_eq!(serde_json::to_string(&mac).unwrap(), r#"{"Interface":{"MacAddress":"02:42:0a:58:00:02"}}"#);
        assert_eq!(serde_json::to_string(&ErrorResponse { err: "x".into() }).unwrap(), r#"{"Err":"x"}"#);
    }
}
