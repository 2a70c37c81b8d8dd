//! Instance-wide operations, every step run and every failure reported
//! together:
//!
//! - `system reset` takes down everything the instance made — sandboxes,
//!   the resolver, networks, the data path — from the state, and then
//!   whatever the state does not name but carries the instance's identity
//!   (namespace files and sandbox files under its run directory, bridges
//!   with its alias, pins under its bpf directory), so it works with the
//!   state file deleted or unreadable (kept under another name).
//! - [`repair`] finishes or rolls back what a crashed command left (its
//!   intent, see [`crate::state::Intent`]) and, after a boot, rebuilds the
//!   networks and the data path from the state and removes sandboxes whose
//!   namespaces did not survive. The common command path runs it when
//!   there is something to do ([`recover`]); `system check [--repair]` and
//!   `system restore` run it on demand, `check` also looking for orphans.
//! - `system upgrade` puts this build's programs in place of a pinned data
//!   path's without dropping a flow.
use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use netpath_common::{PublishedKey, PublishedRange, program_names};

use crate::{
    host::Host,
    netns, network,
    paths::Roots,
    sandbox,
    state::{self, Intent, Mode, State, Store},
    teardown::Teardown,
};

/// Removes every sandbox and network (the default one included), whatever
/// else carries the instance's identity, and unloads the data path. `state`
/// is left empty of whatever was removed. Returns what was found beyond the
/// state (interrupted work, orphans), one line each.
pub fn reset(host: &Host, store: &Store, state: &mut State) -> Result<Vec<String>> {
    let mut teardown = Teardown::new();
    let mut report = Vec::new();
    match store.pending() {
        // An interrupted reset among them is this one.
        Ok(intents) => {
            settle(host, state, intents, true, &mut report, &mut teardown);
        }
        Err(e) => teardown.step("interrupted work", Err(e)),
    }
    reset_all(host, store, state, &mut report, &mut teardown);
    teardown.finish().map(|()| report)
}

fn reset_all(host: &Host, store: &Store, state: &mut State, report: &mut Vec<String>, teardown: &mut Teardown) {
    // One intent for everything, rather than one per sandbox.
    if let Err(e) = store.begin(Intent::Reset) {
        teardown.step("recording the intent", Err(e));
        return;
    }
    let names: Vec<String> = state.sandboxes.keys().cloned().collect();
    for name in &names {
        // Removing an owner also removed the sandboxes sharing its namespaces.
        if state.sandboxes.contains_key(name) {
            teardown.step(format!("sandbox {name}"), sandbox::remove_recorded(host, None, state, name, true));
        }
    }
    crate::dns::stop(&host.roots);
    // Leaving revokes this host's lease: its blocks and endpoint records go
    // from the store with it. An unreachable store only warns (the lease
    // then runs out by itself).
    if let Err(e) = crate::cluster::process::stop(&host.roots, true) {
        eprintln!("netpath: warning: {e:#}");
    }
    let networks: Vec<String> = state.networks.keys().cloned().collect();
    for name in networks {
        teardown.step(format!("network {name}"), network::remove(host, store, state, &name, true));
    }
    // What no record names. Sandboxes removed above were tried once (a
    // failure there is reported already); pins and map entries go with the
    // data path.
    let tried: BTreeSet<String> = names.into_iter().collect();
    sweep(host, state, &tried, false, true, report, teardown);
    teardown.step("data path", host.datapath.unload());
}

/// What [`repair`] looks at and whether it changes anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Repair {
    /// Change things; otherwise only report what would change.
    pub act: bool,
    /// Rebuild from the state even though this boot was already restored.
    pub restore: bool,
    /// Also look for orphans: namespaces, files, bridges, pins and map
    /// entries of this instance that no record names.
    pub sweep: bool,
}

/// Finishes or rolls back interrupted work, restores after a boot (or when
/// asked), and with `sweep` removes orphans. Returns one line per thing
/// found or done; failures of the steps are returned together. With `act`,
/// the state is saved (which settles the intents).
pub fn repair(host: &Host, store: &Store, state: &mut State, what: Repair) -> Result<Vec<String>> {
    let mut report = Vec::new();
    let mut teardown = Teardown::new();
    let reset = match store.pending() {
        Ok(intents) => settle(host, state, intents, what.act, &mut report, &mut teardown),
        Err(e) => {
            teardown.step("interrupted work", Err(e));
            false
        }
    };
    if reset && what.act {
        reset_all(host, store, state, &mut report, &mut teardown);
    }
    let restoring = what.restore || (!boot_is_current(&host.roots) && !is_empty(state));
    if restoring {
        restore(host, state, what.act, &mut report, &mut teardown);
    }
    if what.sweep {
        sweep(host, state, &BTreeSet::new(), true, what.act, &mut report, &mut teardown);
    }
    if what.act {
        teardown.step("saving the state", store.save(state));
        teardown.step("boot marker", mark_boot(&host.roots));
    }
    teardown.finish().map(|()| report)
}

/// The common command path's hook: when a crashed command left work
/// behind, or this is the first command since boot, [`repair`] it (saying
/// what it did on stderr). Costs two file reads otherwise.
pub fn recover(roots: &Roots) -> Result<()> {
    let pending = roots.intent_file().exists();
    if !pending && boot_is_current(roots) {
        return Ok(());
    }
    if !pending && !roots.state_file().exists() {
        return mark_boot(roots);
    }
    let host = Host::open(roots.clone())?;
    let (store, mut state) = Store::open(&host.roots)?;
    // Checked again under the lock: another command may have done it.
    if !host.roots.intent_file().exists() && boot_is_current(&host.roots) {
        return Ok(());
    }
    let report = repair(&host, &store, &mut state, Repair { act: true, ..Repair::default() });
    for line in report.as_deref().unwrap_or_default() {
        eprintln!("netpath: {line}");
    }
    report.map(|_| ())
}

fn is_empty(state: &State) -> bool {
    state.networks.is_empty() && state.sandboxes.is_empty()
}

/// This boot's identity.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Whether the kernel objects of this boot were built from the state: the
/// run directory (a tmpfs, gone at boot) holds the marker of this boot.
fn boot_is_current(roots: &Roots) -> bool {
    fs::read_to_string(roots.boot_marker()).is_ok_and(|s| s.trim() == boot_id())
}

fn mark_boot(roots: &Roots) -> Result<()> {
    fs::create_dir_all(&roots.run).with_context(|| format!("creating {}", roots.run.display()))?;
    fs::write(roots.boot_marker(), boot_id()).with_context(|| format!("writing {}", roots.boot_marker().display()))
}

/// Finishes or rolls back each interrupted piece of work, last first, from
/// its record; every step treats "already gone" as done, so a repair that
/// is itself interrupted is simply run again. An interrupted `system reset`
/// is left to the caller, which runs it again: returns whether there is one.
fn settle(
    host: &Host,
    state: &mut State,
    intents: Vec<Intent>,
    act: bool,
    report: &mut Vec<String>,
    teardown: &mut Teardown,
) -> bool {
    let any = !intents.is_empty();
    let mut reset = false;
    for intent in intents.into_iter().rev() {
        let what = intent.describe();
        if let Intent::Reset = intent {
            report.push(format!("interrupted {what}: {}", if act { "finished" } else { "to be finished" }));
            reset = true;
            continue;
        }
        let committed = match &intent {
            Intent::Run { sandbox, .. } => state.sandboxes.get(&sandbox.name).is_some_and(|s| s.id == sandbox.id),
            Intent::NetworkCreate { network } => state.networks.get(&network.name).is_some_and(|n| n.id == network.id),
            Intent::Remove { .. } | Intent::NetworkRemove { .. } | Intent::Reset => false,
        };
        let verb = match (&intent, committed) {
            (_, true) => "was complete",
            (Intent::Run { .. } | Intent::NetworkCreate { .. }, false) => "rolled back",
            _ => "finished",
        };
        report.push(if act {
            format!("interrupted {what}: {verb}")
        } else {
            format!("interrupted {what}: to be {verb}")
        });
        if !act || committed {
            continue;
        }
        let result = match intent {
            Intent::Run { sandbox, network, datapath_was_loaded } => {
                let mut t = Teardown::new();
                t.absorb(sandbox::take_down(host, state, &sandbox, network.as_deref()));
                if let Some(net) = network.filter(|n| !state.networks.contains_key(&n.name)) {
                    t.step(format!("network {}", net.name), destroy_owned(host, &net));
                }
                let in_use = state.sandboxes.values().any(|s| !s.attachments.is_empty());
                if !datapath_was_loaded && !in_use {
                    t.step("data path", host.datapath.unload());
                }
                t.finish()
            }
            Intent::Remove { sandbox } => {
                let result = sandbox::take_down(host, state, &sandbox, None);
                if state.sandboxes.get(&sandbox.name).is_some_and(|s| s.id == sandbox.id) {
                    state.sandboxes.remove(&sandbox.name);
                }
                result
            }
            Intent::NetworkCreate { network } => destroy_owned(host, &network),
            Intent::NetworkRemove { network } => {
                let result = destroy_owned(host, &network);
                if result.is_ok() && state.networks.get(&network.name).is_some_and(|n| n.id == network.id) {
                    state.networks.remove(&network.name);
                }
                result
            }
            Intent::Reset => Ok(()),
        };
        teardown.step(format!("interrupted {what}"), result);
    }
    if act && any {
        teardown.step("resolver", crate::dns::ensure(host, state));
    }
    reset
}

/// `network::destroy`, except that a bridge carrying another alias than
/// this network's mark is someone else's and stays (an interrupted create
/// may have stopped before making its bridge, and the name may be taken).
fn destroy_owned(host: &Host, net: &state::Network) -> Result<()> {
    if !net.bridge.is_empty() {
        let tag = state::network_tag(&host.roots, net);
        let foreign = host.rtnl.aliased_links()?.into_iter().any(|(_, name, alias)| name == net.bridge && alias != tag);
        if foreign {
            anyhow::bail!("link {} is not this network's (another alias): left in place", net.bridge);
        }
    }
    network::destroy(host, net)
}

/// After a boot (or on demand): sandboxes whose namespaces are gone are
/// removed (Docker shows such containers as `Exited`; netpath has no
/// stopped sandboxes to show, so it says which went), the networks' host
/// side is rebuilt where missing, the data path is loaded and attached to
/// the uplinks and given every network's policy, and the resolver started
/// if needed.
fn restore(host: &Host, state: &mut State, act: bool, report: &mut Vec<String>, teardown: &mut Teardown) {
    let live = |s: &state::Sandbox| match &s.mode {
        Mode::Attached => netns::is_live(&s.netns),
        Mode::Container(owner) => state.sandboxes.get(owner).is_some_and(|o| netns::is_live(&o.netns)),
        Mode::Host => true,
        // The namespace is someone else's (and maybe in another mount
        // namespace, as Docker's are): the wiring lives while its host-side
        // devices do, and a veth pair dies with the namespace holding its
        // other end. So an engine's namespace that went without a DEL
        // (containerd leaks them) takes its record with it.
        Mode::External { .. } => s.attachments.iter().all(|a| host.rtnl.index(&a.host_ifname).ok().flatten().is_some()),
    };
    let lost: Vec<state::Sandbox> = state.sandboxes.values().filter(|s| !live(s)).cloned().collect();
    for sandbox in lost {
        let name = sandbox.name.clone();
        if act {
            teardown.step(format!("sandbox {name}"), sandbox::take_down(host, state, &sandbox, None));
            state.sandboxes.remove(&name);
            report.push(format!("sandbox {name}: its namespaces are gone (reboot?): removed"));
        } else {
            report.push(format!("sandbox {name}: its namespaces are gone (reboot?): to be removed"));
        }
    }
    for net in state.networks.values() {
        let missing = !net.bridge.is_empty() && host.rtnl.index(&net.bridge).ok().flatten().is_none();
        if !missing {
            continue;
        }
        if act {
            let created = network::driver::of(net).and_then(|d| d.create(host, net));
            teardown.step(format!("network {}", net.name), created);
            report.push(format!("network {}: bridge {} recreated", net.name, net.bridge));
        } else {
            report.push(format!("network {}: bridge {} missing: to be recreated", net.name, net.bridge));
        }
    }
    if !state.networks.is_empty() && !host.datapath.is_loaded() {
        report.push(format!("data path not loaded: {}", if act { "loaded" } else { "to be loaded" }));
    }
    if act {
        let was_loaded = host.datapath.is_loaded();
        if !state.networks.is_empty() {
            teardown.step("data path", network::prepare_datapath(host, state));
        }
        if !was_loaded && host.datapath.is_loaded() {
            // Sandboxes that lived through the loss of the pins.
            let names: Vec<String> = state.sandboxes.keys().cloned().collect();
            for name in names {
                let mut sandbox = state.sandboxes[&name].clone();
                if sandbox.attachments.is_empty() {
                    continue;
                }
                let result = sandbox::reinstall(host, state, &mut sandbox);
                if result.is_ok() {
                    report.push(format!("sandbox {name}: data path entries restored"));
                }
                teardown.step(format!("sandbox {name}"), result);
                state.sandboxes.insert(name, sandbox);
            }
        }
        teardown.step("resolver", crate::dns::ensure(host, state));
    }
}

/// Finds (and with `act` removes) what carries this instance's identity but
/// no record of `state` names: namespace files and sandbox files under the
/// run directory, bridges with the instance's alias, and, with `pins`, link
/// pins of interfaces that are gone or not the state's, and map entries for
/// addresses and ports no sandbox holds. Names in `skip` are left alone.
fn sweep(
    host: &Host,
    state: &State,
    skip: &BTreeSet<String>,
    pins: bool,
    act: bool,
    report: &mut Vec<String>,
    teardown: &mut Teardown,
) {
    let verb = if act { "removed" } else { "to be removed" };
    let roots = &host.roots;
    let owned: BTreeSet<PathBuf> = state
        .sandboxes
        .values()
        .filter(|s| s.owns_namespaces())
        .flat_map(|s| [s.netns.clone(), s.uts.clone()])
        .collect();
    let used: Vec<Ipv4Addr> = state.sandboxes.values().flat_map(|s| &s.attachments).map(|a| a.ip).collect();
    let mut orphan_addresses = Vec::new();
    for (dir, is_net) in [(roots.netns_dir(), true), (roots.uts_dir(), false)] {
        for (name, path) in entries(&dir) {
            if owned.contains(&path) || skip.contains(&name) {
                continue;
            }
            report.push(format!("namespace file {} belongs to no sandbox: {verb}", path.display()));
            if !act {
                continue;
            }
            if is_net {
                let found = sandbox::remove_orphan_netns(&path, teardown);
                orphan_addresses.extend(found.into_iter().filter(|a| !used.contains(a)));
            } else {
                teardown.step(format!("namespace file {}", path.display()), netns::remove(&path));
            }
        }
    }
    for (name, path) in entries(&roots.run.join("sandboxes")) {
        if state.sandboxes.contains_key(&name) || skip.contains(&name) {
            continue;
        }
        report.push(format!("sandbox files {} belong to no sandbox: {verb}", path.display()));
        if act {
            teardown.step("sandbox files", sandbox::remove_dir(&path));
        }
    }
    let prefix = state::instance_tag_prefix(roots);
    match host.rtnl.aliased_links() {
        Ok(links) => {
            for (index, name, alias) in links {
                let Some(id) = alias.strip_prefix(&prefix) else { continue };
                if state.networks.values().any(|n| n.id.starts_with(id)) {
                    continue;
                }
                report.push(format!("bridge {name} of a network the state does not hold: {verb}"));
                if act {
                    teardown.step(format!("bridge {name}"), host.rtnl.delete(index));
                }
            }
        }
        Err(e) => teardown.step("listing links", Err(e)),
    }
    if !pins || !host.datapath.is_loaded() {
        return;
    }
    let veths: BTreeSet<&str> =
        state.sandboxes.values().flat_map(|s| &s.attachments).map(|a| a.host_ifname.as_str()).collect();
    for (name, path) in entries(&host.datapath.dir().join("links")) {
        let Some((ifname, program)) = name.split_once('@') else { continue };
        if ifname == "cgroup" {
            continue;
        }
        let exists = host.rtnl.index(ifname).ok().flatten().is_some();
        let foreign_veth = program == program_names::FROM_CONTAINER && !veths.contains(ifname);
        if exists && !foreign_veth {
            continue;
        }
        report.push(format!(
            "link pin {} of {} interface: {verb}",
            path.display(),
            if exists { "no sandbox's" } else { "a vanished" }
        ));
        if act {
            teardown.step(format!("pin {}", path.display()), fs::remove_file(&path).map_err(anyhow::Error::from));
            if exists && ifname.starts_with("veth") {
                teardown.step(format!("veth {ifname}"), host.rtnl.delete_by_name(ifname));
            }
        }
    }
    if act && !orphan_addresses.is_empty() {
        teardown.step("data path entries of orphans", sandbox::forget_addresses(host, &orphan_addresses));
    }
    teardown.absorb(sweep_maps(host, state, &used, act, report));
}

/// Endpoints, published ports and range slots no sandbox of `state` holds.
fn sweep_maps(host: &Host, state: &State, used: &[Ipv4Addr], act: bool, report: &mut Vec<String>) -> Result<()> {
    let verb = if act { "removed" } else { "to be removed" };
    let dp = &host.datapath;
    let used: Vec<[u8; 4]> = used.iter().map(|a| a.octets()).collect();
    let endpoints: Vec<[u8; 4]> =
        dp.endpoints()?.keys().filter_map(|k| k.ok()).map(|k| k.ipv4).filter(|ip| !used.contains(ip)).collect();
    let mut teardown = Teardown::new();
    for ip in endpoints {
        report.push(format!("endpoint entry {} of no sandbox: {verb}", Ipv4Addr::from(ip)));
        if act {
            teardown.step("endpoint entry", dp.remove_endpoint(netpath_common::EndpointKey { ipv4: ip }));
        }
    }
    let published = state.sandboxes.values().flat_map(|s| &s.published);
    let owned: BTreeSet<(u8, [u8; 4], u16)> = published
        .clone()
        .filter(|m| m.port_count() == 1)
        .map(|m| (m.proto.number(), m.host_ip.octets(), m.host_first))
        .collect();
    let stray: Vec<PublishedKey> = dp
        .published()?
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !owned.contains(&(k.proto, k.host_addr, k.host_port)))
        .collect();
    if !stray.is_empty() {
        report.push(format!("{} published port entries of no sandbox: {verb}", stray.len()));
        if act {
            teardown.step("published ports", dp.remove_published(stray));
        }
    }
    let ranges: BTreeSet<(u8, [u8; 4], u16, u16)> = published
        .filter(|m| m.port_count() > 1)
        .map(|m| (m.proto.number(), m.host_ip.octets(), m.host_first, m.host_last))
        .collect();
    for (slot, r) in dp.range_slots()?.iter().enumerate() {
        if r.proto == 0 || ranges.contains(&(r.proto, r.host_addr, r.host_first, r.host_last)) {
            continue;
        }
        report.push(format!("published range slot {slot} of no sandbox: {verb}"));
        if act {
            teardown.step("published range", dp.set_range(slot as u32, PublishedRange::default()));
        }
    }
    teardown.finish()
}

/// Replaces the programs of the pinned data path with this build's, keeping
/// its maps and attachments (see [`crate::datapath::Datapath::upgrade`]).
/// Returns what to tell the user.
pub fn upgrade(host: &Host) -> Result<String> {
    let datapath = &host.datapath;
    if !datapath.is_loaded() {
        return Ok(format!(
            "no data path is pinned at {}: the next command that needs one loads this build's",
            datapath.dir().display()
        ));
    }
    if datapath.is_current() {
        return Ok("the data path already runs this build's programs".to_string());
    }
    Ok(datapath.upgrade()?.to_string())
}

/// (name, path) of the entries of `dir`; none when it does not exist.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else { return Vec::new() };
    read.flatten().filter_map(|e| Some((e.file_name().into_string().ok()?, e.path()))).collect()
}
