//! The overlay driver's dealings with the cluster store (etcd, through
//! [`crate::cluster`]): overlay networks are created and removed there, so
//! every host sees them; each host adopts them locally with a block of
//! their subnet leased to it; each sandbox attached on this host is
//! registered there (bound to the host's lease), so the other hosts' agents
//! program it into their `REMOTE_ENDPOINTS` and resolvers.
//!
//! Local networks never touch the store: with the store down they keep
//! working, and every overlay change fails with one line naming the store.
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

use super::overlay::{self, DEFAULT_MTU, Shared};
use crate::{
    cluster::{
        Cluster, EndpointRecord, HostRecord, Membership, OverlayNetwork,
        agent::{Files, host_id},
    },
    config::ClusterConfig,
    host::Host,
    state::{Attachment, Intent, Network, State, Store},
};

/// The store configuration, or why overlay networks cannot be used.
pub fn config(host: &Host) -> Result<&ClusterConfig> {
    host.config.cluster.as_ref().with_context(|| {
        format!(
            "overlay networks need a cluster store: set \"cluster-store\" and \"cluster-advertise\" in {}",
            host.roots.config.display()
        )
    })
}

/// This host in the store: a connection and its membership. The agent
/// keeps the membership alive; until it runs, the first overlay change
/// joins (and saves the membership where the agent picks it up).
pub struct Member {
    pub cluster: Cluster,
    pub membership: Membership,
}

/// Connects to the store and takes up this host's membership: the one the
/// agent (started by every command while a store is configured) holds, or
/// the saved one while its lease lives, else a new one that the agent then
/// takes up (`Cluster::take_up`).
pub fn member(host: &Host) -> Result<Member> {
    let cfg = config(host)?;
    let cluster = Cluster::connect(&cfg.store)?;
    let files = Files::of(&host.roots);
    let me = HostRecord { id: host_id(&files.host_id)?, vtep: cfg.advertise };
    let membership = cluster.take_up(&me, cfg.lease_ttl, &files.membership)?;
    Ok(Member { cluster, membership })
}

/// The shared network with this host's block.
fn shared(net: &OverlayNetwork, block: ipnetwork::Ipv4Network) -> Shared {
    Shared {
        name: net.name.clone(),
        id: net.id.clone(),
        subnet: net.subnet,
        gateway: net.gateway,
        vni: net.vni,
        options: net.options.clone(),
        block,
    }
}

/// `network create -d overlay`: checked against this host's networks,
/// created in the store (which refuses a name or subnet taken anywhere and
/// assigns the VNI), then adopted here with a leased block.
pub fn create(host: &Host, store: &Store, state: &mut State, req: &super::CreateRequest) -> Result<Network> {
    config(host)?;
    if req.internal {
        bail!("--internal is not supported on overlay networks");
    }
    let planned = super::plan_on(state, &host.config, &super::host_subnets(host)?, req)?;
    if planned.ip_range.is_some() {
        bail!("--ip-range is not supported on overlay networks: each host gets a block of the subnet");
    }
    let mut options = planned.options.clone();
    if planned.mtu != DEFAULT_MTU {
        options.insert(super::OPT_MTU.to_string(), planned.mtu.to_string());
    }
    let me = member(host)?;
    let record = OverlayNetwork {
        name: planned.name.clone(),
        id: planned.id.clone(),
        subnet: planned.subnet,
        gateway: planned.gateway,
        vni: 0,
        block_prefix: OverlayNetwork::default_block_prefix(planned.subnet),
        options,
    };
    let stored = me.cluster.create_network(&record)?;
    let block = me.cluster.lease_block(&stored.name, &me.membership)?;
    overlay::adopt(host, store, state, &shared(&stored, block))
}

/// Brings this host's overlay networks in line with the store: networks
/// created elsewhere are adopted (a block leased for each), networks
/// removed elsewhere are taken down here when no local sandbox uses them.
/// Without a configured store: nothing. Returns whether the state changed.
pub fn sync(host: &Host, store: &Store, state: &mut State) -> Result<bool> {
    if host.config.cluster.is_none() {
        return Ok(false);
    }
    // Reading the list needs no membership; only adopting a network (a
    // block leased for it) does, so listing commands take no lease.
    let shared_nets = Cluster::connect(&config(host)?.store)?.networks()?;
    let mut me = None;
    let mut changed = false;
    for net in &shared_nets {
        if state.networks.get(&net.name).is_some_and(|n| n.id == net.id) {
            continue;
        }
        let me = match &mut me {
            Some(me) => me,
            None => me.insert(member(host)?),
        };
        let block = me.cluster.lease_block(&net.name, &me.membership)?;
        overlay::adopt(host, store, state, &shared(net, block))
            .with_context(|| format!("adopting overlay network {}", net.name))?;
        changed = true;
    }
    let gone: Vec<Network> = state
        .networks
        .values()
        .filter(|n| n.driver == overlay::DRIVER_NAME && !shared_nets.iter().any(|s| s.id == n.id))
        .filter(|n| state.attachments_on(&n.name).next().is_none())
        .cloned()
        .collect();
    for net in gone {
        store.begin(Intent::NetworkRemove { network: net.clone() })?;
        super::destroy(host, &net)?;
        state.networks.remove(&net.name);
        changed = true;
    }
    Ok(changed)
}

/// [`sync`] for commands that only show things: a store that cannot be
/// reached costs a warning, not the local view.
pub fn sync_or_warn(host: &Host, store: &Store, state: &mut State) -> bool {
    match sync(host, store, state) {
        Ok(changed) => changed,
        Err(e) => {
            eprintln!("netpath: overlay networks not refreshed: {e:#}");
            false
        }
    }
}

/// Before a command that names `network`: adopts it from the store when
/// this host does not know it (and saves the state at once, so a failing
/// command keeps the adopted network recorded).
pub fn adopt_if_unknown(host: &Host, store: &Store, state: &mut State, network: Option<&str>) -> Result<()> {
    let Some(name) = network else { return Ok(()) };
    if host.config.cluster.is_none() || state.find_network(name).is_ok() || is_mode(name) {
        return Ok(());
    }
    if sync(host, store, state)? {
        store.save(state)?;
    }
    Ok(())
}

/// `run --network` values that name no network.
fn is_mode(name: &str) -> bool {
    matches!(name, "host" | "none" | "bridge" | "default") || name.starts_with("container:")
}

/// Records the sandbox attached as `att` in the store, bound to this
/// host's lease. `name` is the sandbox's.
pub fn register(host: &Host, net: &Network, vni: u32, name: &str, att: &Attachment) -> Result<()> {
    let me = member(host)?;
    let ep = EndpointRecord {
        network: net.name.clone(),
        vni,
        ip: att.ip,
        mac: att.mac,
        name: name.to_string(),
        aliases: att.aliases.clone(),
        host: me.membership.host.id.clone(),
        vtep: me.membership.host.vtep,
    };
    me.cluster.register_endpoint(&ep, &me.membership)
}

/// Deletes the sandbox's record unless another host holds the address now.
pub fn release(host: &Host, net: &Network, ip: Ipv4Addr) -> Result<()> {
    // Only read: a host that never had an identity holds no record, and a
    // removal must not make one up.
    let Ok(id) = std::fs::read_to_string(Files::of(&host.roots).host_id) else {
        return Ok(());
    };
    Cluster::connect(&config(host)?.store)?.release_endpoint(&net.name, ip, id.trim())
}

/// `network rm` of an overlay network: gone from the store first, which
/// refuses while any host has a sandbox on it.
pub fn remove(host: &Host, net: &Network) -> Result<()> {
    Cluster::connect(&config(host)?.store)?.remove_network(&net.name)
}
