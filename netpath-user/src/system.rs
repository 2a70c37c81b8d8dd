//! Instance-wide operations: `system reset` takes down everything the
//! instance made — sandboxes, the resolver, networks, the data path — every
//! step run, every failure reported together.
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
