//! `netpath info`: the instance at a glance, as `docker info` shows a
//! daemon's — sandboxes and networks, the default network, whether the data
//! path is loaded, its programs and where each is attached, its maps and how
//! full they are, uplinks, the resolver, and where files live. Reads only:
//! it opens pins and the state, and changes nothing.
use std::{
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use aya::maps::{MapData, MapType};
use netpath_common::{map_layout, map_names, program_names};
use serde_json::{Value, json};

use crate::{
    config::Config,
    datapath::Datapath,
    host::Host,
    network::{self, DEFAULT_NETWORK_NAME},
    paths::Roots,
    sandbox,
    state::State,
};

/// Where each program attaches (one row per attach point kind).
const HOOKS: &[(&str, &str)] = &[
    (program_names::FROM_CONTAINER, "tcx ingress of sandbox veths"),
    (program_names::FROM_UPLINK, "tcx ingress of uplinks"),
    (program_names::TO_UPLINK, "tcx egress of uplinks"),
    (program_names::XDP_FROM_UPLINK, "xdp of uplinks"),
    (program_names::FROM_OVERLAY, "tcx ingress of the VXLAN device"),
    (program_names::SOCK_CONNECT4, "cgroup connect4"),
    (program_names::SOCK_SENDMSG4, "cgroup sendmsg4"),
    (program_names::SOCK_RECVMSG4, "cgroup recvmsg4"),
];

/// The document `info` prints (and `info --format` applies templates to).
pub fn document(roots: &Roots, state: &State) -> Value {
    let (config, config_error) = match Config::load(&roots.config) {
        Ok(c) => (c, Value::Null),
        Err(e) => (Config::default(), json!(format!("{e:#}"))),
    };
    let default = match state.networks.get(DEFAULT_NETWORK_NAME) {
        Some(n) => json!({"Name": n.name, "ID": n.id, "Bridge": n.bridge, "Subnet": n.subnet.to_string(),
                          "Gateway": n.gateway.to_string(), "Exists": true}),
        None => {
            let n = network::plan_default(state, &config);
            json!({"Name": n.name, "ID": "", "Bridge": n.bridge, "Subnet": n.subnet.to_string(),
                   "Gateway": n.gateway.to_string(), "Exists": false})
        }
    };
    let (uplinks, uplinks_from) = match &config.uplinks {
        Some(list) => (json!(list), "config"),
        None => {
            let found = Host::open(roots.clone()).and_then(|h| h.uplinks());
            (found.map_or_else(|e| json!([format!("(unknown: {e:#})")]), |l| json!(l)), "default routes")
        }
    };
    let resolver = crate::dns::running(roots);
    json!({
        "Sandboxes": state.sandboxes.len(),
        "SandboxesRunning": state.sandboxes.values().filter(|s| sandbox::is_running(s)).count(),
        "Networks": state.networks.len(),
        "DefaultNetwork": default,
        "Datapath": datapath(roots),
        "Uplinks": uplinks,
        "UplinksFrom": uplinks_from,
        "UplinkXdp": format!("{:?}", config.uplink_xdp).to_lowercase(),
        "Masquerade": config.ip_masq,
        "ICC": config.icc,
        "Resolver": {"Running": resolver.is_some(), "Pid": resolver.unwrap_or(0)},
        "Cluster": crate::cluster::process::info(roots, &config),
        "ConfigFile": roots.config.display().to_string(),
        "ConfigFileExists": roots.config.exists(),
        "ConfigError": config_error,
        "StateDir": roots.state.display().to_string(),
        "RunDir": roots.run.display().to_string(),
        "Cgroup": roots.cgroup.display().to_string(),
        "Version": env!("CARGO_PKG_VERSION"),
    })
}

fn datapath(roots: &Roots) -> Value {
    let dp = Datapath::at(&roots.bpf);
    let loaded = dp.is_loaded();
    let stamp = fs::read_dir(dp.dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .find(|n| n.starts_with("object-"));
    let current = crate::datapath::object_digest();
    let object_current = stamp.as_deref().is_some_and(|s| current.starts_with(s.trim_start_matches("object-")));
    // Attachments by program: `<bpf>/links/<ifname>@<program>`.
    let mut links: Vec<(String, String)> = fs::read_dir(dp.dir().join("links"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let (ifname, program) = name.rsplit_once('@')?;
            let target = if ifname == "cgroup" { roots.cgroup.display().to_string() } else { ifname.to_string() };
            Some((program.to_string(), target))
        })
        .collect();
    links.sort();
    let programs: Vec<Value> = HOOKS
        .iter()
        .map(|&(name, hook)| {
            let pin = dp.dir().join("programs").join(name);
            let info = aya::programs::ProgramInfo::from_pin(&pin).ok();
            let kind = info
                .as_ref()
                .map(|i| format!("{:?}", i.program_type()).trim_start_matches("BPF_PROG_TYPE_").to_lowercase());
            let attached: Vec<&String> = links.iter().filter(|(p, _)| p == name).map(|(_, t)| t).collect();
            json!({
                "Name": name,
                "Pinned": info.is_some(),
                "Type": kind.unwrap_or_default(),
                "ID": info.as_ref().map_or(0, |i| i.id()),
                "Instructions": info.as_ref().and_then(|i| i.verified_instruction_count()).unwrap_or(0),
                "Hook": hook,
                "AttachedTo": attached,
            })
        })
        .collect();
    let mut maps: Vec<Value> = map_layout::ALL.iter().map(|m| map(&dp.maps_dir().join(m.name), m.name)).collect();
    // The range table is an array: its fill is the slots in use.
    if let Ok(slots) = dp.range_slots() {
        let used = slots.iter().filter(|r| r.proto != 0).count();
        for m in maps.iter_mut().filter(|m| m["Name"] == map_names::PUBLISHED_RANGES) {
            m["Entries"] = Value::from(used);
        }
    }
    json!({
        "Loaded": loaded,
        "Pins": dp.dir().display().to_string(),
        "Object": stamp.unwrap_or_default(),
        "ObjectCurrent": object_current,
        "Programs": programs,
        "Maps": maps,
    })
}

/// One map's type, size and fill. Hash maps are counted by walking their
/// keys (a userspace read, bounded by the map's size); arrays are always
/// full, so their fill is their size (the range table's is corrected by
/// the caller).
fn map(pin: &Path, name: &str) -> Value {
    let Ok(data) = MapData::from_pin(pin) else { return json!({"Name": name, "Pinned": false}) };
    let Ok(info) = data.info() else { return json!({"Name": name, "Pinned": true}) };
    let kind = info.map_type().ok();
    let hashed = matches!(kind, Some(MapType::Hash | MapType::LruHash | MapType::PerCpuHash | MapType::LruPerCpuHash));
    let entries = if hashed {
        count_keys(data.fd().as_fd(), info.key_size(), info.max_entries()).map_or(Value::Null, Value::from)
    } else {
        Value::from(info.max_entries())
    };
    json!({
        "Name": name,
        "Pinned": true,
        "Type": kind.map(map_type_name).unwrap_or("unknown"),
        "Entries": entries,
        "MaxEntries": info.max_entries(),
        "KeySize": info.key_size(),
        "ValueSize": info.value_size(),
    })
}

/// bpftool's names for the map types netpath uses.
fn map_type_name(t: MapType) -> &'static str {
    match t {
        MapType::Hash => "hash",
        MapType::LruHash => "lru_hash",
        MapType::PerCpuHash => "percpu_hash",
        MapType::LruPerCpuHash => "lru_percpu_hash",
        MapType::Array => "array",
        MapType::PerCpuArray => "percpu_array",
        MapType::RingBuf => "ringbuf",
        MapType::PerfEventArray => "perf_event_array",
        _ => "other",
    }
}

/// How many keys a hash map holds, by `BPF_MAP_GET_NEXT_KEY` (aya has no
/// untyped key walk). Stops after `limit` keys: an LRU map under traffic
/// changes while it is walked, and the count is a snapshot anyway.
fn count_keys(fd: BorrowedFd<'_>, key_size: u32, limit: u32) -> std::io::Result<u32> {
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    // The `bpf_attr` members this command reads.
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    let mut key = vec![0u8; key_size as usize];
    let mut next = vec![0u8; key_size as usize];
    let mut count = 0;
    while count < limit {
        let attr = Attr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            // A null key asks for the first one.
            key: if count == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at buffers of the map's key size that live
        // across the call; the kernel reads `key` and writes `next_key`.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_GET_NEXT_KEY, &attr as *const Attr, std::mem::size_of::<Attr>())
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(e);
        }
        count += 1;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(count)
}

/// The document as text, in `docker info`'s indented style.
pub fn render(doc: &Value) -> String {
    let s = |v: &Value| crate::template::display(v);
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("Sandboxes: {}", doc["Sandboxes"]));
    line(format!(" Running: {}", doc["SandboxesRunning"]));
    line(format!("Networks: {}", doc["Networks"]));
    let d = &doc["DefaultNetwork"];
    line(format!(
        " Default: {} ({}, {}, gateway {}){}",
        s(&d["Name"]),
        s(&d["Bridge"]),
        s(&d["Subnet"]),
        s(&d["Gateway"]),
        if d["Exists"] == true { "" } else { ", created on first use" }
    ));
    let dp = &doc["Datapath"];
    line(format!("Data path: {}", if dp["Loaded"] == true { "loaded" } else { "not loaded" }));
    line(format!(" Pins: {}", s(&dp["Pins"])));
    if dp["Loaded"] == true {
        let which = if dp["ObjectCurrent"] == true { "this build" } else { "another build" };
        line(format!(" Object: {} ({which})", s(&dp["Object"])));
        line(" Programs:".into());
        line(format!("  {:<18}{:<18}{:<8}{:<30}ATTACHED TO", "NAME", "TYPE", "ID", "HOOK"));
        for p in dp["Programs"].as_array().into_iter().flatten() {
            let attached: Vec<String> = p["AttachedTo"].as_array().into_iter().flatten().map(s).collect();
            line(format!(
                "  {:<18}{:<18}{:<8}{:<30}{}",
                s(&p["Name"]),
                s(&p["Type"]),
                s(&p["ID"]),
                s(&p["Hook"]),
                if attached.is_empty() { "-".to_string() } else { attached.join(", ") }
            ));
        }
        line(" Maps:".into());
        line(format!("  {:<18}{:<16}{:>10}{:>10}", "NAME", "TYPE", "ENTRIES", "MAX"));
        for m in dp["Maps"].as_array().into_iter().flatten() {
            let entries = if m["Entries"].is_null() { "?".to_string() } else { s(&m["Entries"]) };
            line(format!("  {:<18}{:<16}{:>10}{:>10}", s(&m["Name"]), s(&m["Type"]), entries, s(&m["MaxEntries"])));
        }
    }
    let uplinks: Vec<String> = doc["Uplinks"].as_array().into_iter().flatten().map(s).collect();
    line(format!(
        "Uplinks: {} (from {})",
        if uplinks.is_empty() { "none".to_string() } else { uplinks.join(", ") },
        s(&doc["UplinksFrom"])
    ));
    line(format!(" XDP: {}", s(&doc["UplinkXdp"])));
    line(format!("Masquerade (default network): {}", doc["Masquerade"]));
    line(format!("ICC (default network): {}", doc["ICC"]));
    let r = &doc["Resolver"];
    line(format!(
        "Resolver: {}",
        if r["Running"] == true { format!("running (pid {})", r["Pid"]) } else { "not running".into() }
    ));
    let c = &doc["Cluster"];
    if c["Enabled"] == true {
        let store: Vec<String> = c["Store"].as_array().into_iter().flatten().map(s).collect();
        line(format!("Cluster store: {}", store.join(", ")));
        line(format!(" Host ID: {}", s(&c["HostID"])));
        line(format!(" VTEP: {}", s(&c["VTEP"])));
        let agent = &c["Agent"];
        line(format!(
            " Agent: {}",
            if agent["Running"] == true { format!("running (pid {})", agent["Pid"]) } else { "not running".into() }
        ));
        line(format!(" Lease: {} {}", s(&c["Lease"]), s(&c["LeaseState"])));
        line(format!(" Remote endpoints: {}", s(&c["RemoteEndpoints"])));
        // Sandboxes taken off an overlay network because another host took
        // their address while this one was away: the user must see why.
        for evicted in c["Evicted"].as_array().into_iter().flatten() {
            line(format!(" Evicted: {}", s(evicted)));
        }
    } else {
        line("Cluster store: none".into());
    }
    let config_state = match (&doc["ConfigError"], doc["ConfigFileExists"] == true) {
        (Value::String(e), _) => format!(" (invalid, defaults used: {e})"),
        (_, true) => String::new(),
        (_, false) => " (absent: defaults)".into(),
    };
    line(format!("Config file: {}{config_state}", s(&doc["ConfigFile"])));
    line(format!("State dir: {}", s(&doc["StateDir"])));
    line(format!("Run dir: {}", s(&doc["RunDir"])));
    line(format!("cgroup: {}", s(&doc["Cgroup"])));
    line(format!("Version: {}", s(&doc["Version"])));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_instance_reads_without_changing_anything() {
        let dir = std::env::temp_dir().join(format!("netpath-info-{}", std::process::id()));
        let roots = Roots::under(&dir, dir.join("bpf"), dir.join("cgroup"));
        let doc = document(&roots, &State::default());
        assert_eq!(doc["Datapath"]["Loaded"], false);
        assert_eq!(doc["DefaultNetwork"]["Exists"], false);
        assert_eq!(doc["DefaultNetwork"]["Subnet"], "172.17.0.0/16");
        assert_eq!(doc["Datapath"]["Programs"].as_array().unwrap().len(), HOOKS.len());
        let text = render(&doc);
        assert!(text.contains("Data path: not loaded"), "{text}");
        assert!(text.contains("(absent: defaults)"), "{text}");
        assert!(!dir.exists(), "info created {}", dir.display());
    }
}
