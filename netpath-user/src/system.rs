//! Instance-wide operations: `system reset` takes down everything the
//! instance made — sandboxes, the resolver, networks, the data path — every
//! step run, every failure reported together; `system upgrade` puts this
//! build's programs in place of a pinned data path's without dropping a flow.
use anyhow::Result;

use crate::{host::Host, network, sandbox, state::State, teardown::Teardown};

/// Removes every sandbox and network (the default one included) and unloads
/// the data path. `state` is left empty of whatever was removed.
pub fn reset(host: &Host, state: &mut State) -> Result<()> {
    let mut teardown = Teardown::new();
    let names: Vec<String> = state.sandboxes.keys().cloned().collect();
    for name in names {
        // Removing an owner also removed the sandboxes sharing its namespaces.
        if state.sandboxes.contains_key(&name) {
            teardown.step(format!("sandbox {name}"), sandbox::remove(host, state, &name, true));
        }
    }
    crate::dns::stop(&host.roots);
    let names: Vec<String> = state.networks.keys().cloned().collect();
    for name in names {
        teardown.step(format!("network {name}"), network::remove(host, state, &name, true));
    }
    teardown.step("data path", host.datapath.unload());
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
