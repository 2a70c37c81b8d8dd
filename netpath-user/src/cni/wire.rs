//! The CNI wire format netpath's plugin reads and writes (spec 1.0/1.1,
//! older result shapes down to 0.3.0 for runtimes that still send them):
//! serde types of our own rather than a crate, because the format is small,
//! the crates change their API from release to release, and netpath needs
//! leniencies they lack (containerd's capitalised `HostPort` keys).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Well-known error codes (SPEC.md, "Well-known Error Codes"); 100 and up
/// are netpath's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// netpath could not do what was asked (address or port taken, a
    /// kernel call failed); `details` holds netpath's whole error.
    pub const NETPATH_FAILED: u32 = 100;
    /// CHECK found the attachment not as ADD made it.
    pub const CHECK_FAILED: u32 = 101;
}

/// The plugin's entry of a conflist, as the runtime passes it on stdin
/// (`name` and `cniVersion` copied in from the list).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Docker-like network options, used when the first ADD creates the network.
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub mtu: Option<u32>,
    #[serde(default)]
    pub internal: bool,
    /// Traffic between members (Docker's enable_icc); default true.
    pub icc: Option<bool>,
    /// Masquerade to the outside (Docker's enable_ip_masquerade); default true.
    pub masquerade: Option<bool>,
    /// Any other `network create -o KEY=VALUE` driver option.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Where the netpath instance lives; unset keys come from the NETPATH_*
    /// environment, then the defaults.
    #[serde(default)]
    pub netpath: RootsConf,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<Value>,
    /// GC's list of attachments to keep.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootsConf {
    pub state_dir: Option<String>,
    pub run_dir: Option<String>,
    pub bpf_dir: Option<String>,
    pub config: Option<String>,
    pub cgroup: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `ips` capability: requested addresses, `10.1.0.5/24` or bare.
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
    /// `aliases` capability: network name -> names.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
}

/// One `portMappings` entry; containerd and nerdctl send the keys
/// capitalised (`HostPort`), the spec's conventions camelCase.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PortMapping {
    #[serde(alias = "HostPort", rename = "hostPort", default)]
    pub host_port: u16,
    #[serde(alias = "ContainerPort", rename = "containerPort")]
    pub container_port: u16,
    #[serde(alias = "Protocol", default)]
    pub protocol: Option<String>,
    #[serde(alias = "HostIP", alias = "HostIp", rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// ADD's result (and what CHECK and DEL get back as `prevResult`).
#[derive(Clone, Debug, Serialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path, for interfaces inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IpConfig {
    /// Results before 1.0.0 name the IP version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub interface: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// The error every command prints on stdout when it fails.
#[derive(Clone, Debug, Serialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { cni_version: String::new(), code, msg: msg.into(), details: String::new() }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// Whether `version` is one this plugin speaks.
pub fn supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Whether `version` is at least `min` (both `X.Y.Z`).
pub fn at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    parse(version) >= parse(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_take_both_spellings() {
        let spec: RuntimeConfig = serde_json::from_str(
            r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
               {"HostPort":5353,"ContainerPort":53,"Protocol":"udp","HostIP":"0.0.0.0"}]}"#,
        )
        .unwrap();
        let got: Vec<_> = spec
            .port_mappings
            .iter()
            .map(|p| (p.host_port, p.container_port, p.protocol.clone(), p.host_ip.clone()))
            .collect();
        assert_eq!(got, [(8080, 80, Some("tcp".into()), None), (5353, 53, Some("udp".into()), Some("0.0.0.0".into()))]);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("1.1.0", "1.1.0") && at_least("1.10.0", "1.2.0") && !at_least("1.0.0", "1.1.0"));
        assert!(supported("1.0.0") && !supported("2.0.0"));
    }
}
