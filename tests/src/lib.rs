//! Shared helpers for the lab tests: where the netpath binary is, and labs
//! built through the library's own lab code.
use std::path::PathBuf;

use anyhow::Result;
pub use netpath::lab::Lab;
use serde_json::Value;

/// The netpath binary under test: `NETPATH_BIN` (set by `cargo xtask test`),
/// else the release build next to this workspace.
pub fn netpath_bin() -> PathBuf {
    std::env::var_os("NETPATH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/netpath"))
}

pub fn lab(tag: &str) -> Lab {
    Lab::create(tag, netpath_bin()).expect("building the lab")
}

/// `netpath ps --json` as parsed JSON.
pub fn sandboxes(lab: &Lab) -> Result<Vec<Value>> {
    Ok(serde_json::from_str(&lab.netpath_ok(&["ps", "--json"])?)?)
}

/// The host-side veth of sandbox `name`.
pub fn host_ifname(lab: &Lab, name: &str) -> Result<String> {
    let all = sandboxes(lab)?;
    let s = all.iter().find(|s| s["name"] == name).ok_or_else(|| anyhow::anyhow!("no sandbox {name}"))?;
    Ok(s["attachments"][0]["host_ifname"].as_str().unwrap_or_default().to_string())
}

/// Runs a command, returning (exit code, stdout, stderr).
pub fn output(cmd: &mut std::process::Command) -> Result<(i32, String, String)> {
    let out = cmd.output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
