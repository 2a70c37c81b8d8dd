use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    macros::btf_map,
};
use netpath_common::{
    CtEntry, DEFAULT_CONNTRACK_ENTRIES, DEFAULT_CT_NEW_ENTRIES, DatapathConfig, Endpoint, EndpointKey, FRAG_ENTRIES,
    FlowKey, FragKey, FragPorts, LinkKey, MAX_ENDPOINTS, MAX_HOST_ADDRS, MAX_LINKS, MAX_NETWORKS, MAX_OVERLAY_NETWORKS,
    MAX_PUBLISHED, MAX_PUBLISHED_RANGES, MAX_REMOTE_ENDPOINTS, MAX_UPLINKS, NetworkPolicy, OverlayNetwork,
    PublishedKey, PublishedRange, PublishedTarget, ReasonStats, RemoteEndpoint, RemoteEndpointKey, SOCK_REVNAT_ENTRIES,
    STATS_SLOTS, SockRevKey, SockRevValue, Uplink, VethKey, VniKey,
};

#[btf_map]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint, MAX_ENDPOINTS> = HashMap::new();

#[btf_map]
pub static NETWORKS: HashMap<u32, NetworkPolicy, MAX_NETWORKS> = HashMap::new();

#[btf_map]
pub static UPLINKS: HashMap<u32, Uplink, MAX_UPLINKS> = HashMap::new();

#[btf_map]
pub static PUBLISHED: HashMap<PublishedKey, PublishedTarget, MAX_PUBLISHED> = HashMap::new();

#[btf_map]
pub static PUBLISHED_RANGES: Array<PublishedRange, MAX_PUBLISHED_RANGES> = Array::new();

/// Confirmed connections (both sides have spoken), two entries each.
#[btf_map]
pub static CONNTRACK: LruHashMap<FlowKey, CtEntry, DEFAULT_CONNTRACK_ENTRIES> = LruHashMap::new();

/// Connections not yet confirmed (a SYN, an unanswered datagram): a table of
/// their own, so a flood of them evicts only its own kind.
#[btf_map]
pub static CT_NEW: LruHashMap<FlowKey, CtEntry, DEFAULT_CT_NEW_ENTRIES> = LruHashMap::new();

/// Ports of fragmented datagrams whose first piece was seen, for the later
/// pieces (which carry no transport header).
#[btf_map]
pub static FRAGS: LruHashMap<FragKey, FragPorts, FRAG_ENTRIES> = LruHashMap::new();

/// Addresses of the host namespace, for the socket programs.
#[btf_map]
pub static HOST_ADDRS: HashMap<[u8; 4], u8, MAX_HOST_ADDRS> = HashMap::new();

#[btf_map]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, SockRevValue, SOCK_REVNAT_ENTRIES> = LruHashMap::new();

#[btf_map]
pub static LINKS: HashMap<LinkKey, u8, MAX_LINKS> = HashMap::new();

#[btf_map]
pub static CONFIG: Array<DatapathConfig, 1> = Array::new();

/// Per-CPU packets and bytes per (program, verdict reason), at
/// `netpath_common::stats_slot`.
#[btf_map]
pub static STATS: PerCpuArray<ReasonStats, STATS_SLOTS> = PerCpuArray::new();

/// Host-side veth of a sandbox -> its endpoint's address (for frames that
/// carry no IPv4 source).
#[btf_map]
pub static VETHS: HashMap<VethKey, EndpointKey, MAX_ENDPOINTS> = HashMap::new();

/// Local network id -> its VNI and the VXLAN device (overlay networks only).
#[btf_map]
pub static OVERLAY_NETWORKS: HashMap<u32, OverlayNetwork, MAX_OVERLAY_NETWORKS> = HashMap::new();

/// VNI -> local network id, for what arrives on the VXLAN device.
#[btf_map]
pub static VNIS: HashMap<VniKey, u32, MAX_OVERLAY_NETWORKS> = HashMap::new();

/// (VNI, address) of a sandbox on another host -> its host's VTEP and its
/// MAC; written by the loader from the cluster store, only looked up here.
#[btf_map]
pub static REMOTE_ENDPOINTS: HashMap<RemoteEndpointKey, RemoteEndpoint, MAX_REMOTE_ENDPOINTS> = HashMap::new();

/// Subnets of the overlay networks this host takes part in -> local
/// network id: an address on another overlay network is known for one
/// without iterating anything.
#[btf_map]
pub static OVERLAY_SUBNETS: LpmTrie<[u8; 4], u32, MAX_OVERLAY_NETWORKS> = LpmTrie::new();

#[inline(always)]
pub fn config() -> DatapathConfig {
    CONFIG.get(0).copied().unwrap_or_default()
}

/// The endpoint of `addr`, as a reference into the map: an `Option` of a
/// pointer has no uninitialised payload for LLVM to copy around (which the
/// verifier rejects when an `Option<Endpoint>` lives across helper calls).
#[inline(always)]
pub fn endpoint(addr: [u8; 4]) -> Option<&'static Endpoint> {
    // SAFETY: map values stay valid for the whole program run (RCU); a
    // concurrent update of their plain fields is benign.
    unsafe { ENDPOINTS.get(EndpointKey { ipv4: addr }) }
}

#[inline(always)]
pub fn network(id: u32) -> Option<NetworkPolicy> {
    // SAFETY: as above.
    unsafe { NETWORKS.get(id) }.copied()
}

/// The endpoint behind the sandbox veth `ifindex`, with its address.
#[inline(always)]
pub fn veth_endpoint(ifindex: u32) -> Option<([u8; 4], &'static Endpoint)> {
    // SAFETY: the key is copied out immediately.
    let key = unsafe { VETHS.get(VethKey { host_ifindex: ifindex }) }.copied()?;
    Some((key.ipv4, endpoint(key.ipv4)?))
}

#[inline(always)]
pub fn overlay(network_id: u32) -> Option<OverlayNetwork> {
    // SAFETY: as above.
    unsafe { OVERLAY_NETWORKS.get(network_id) }.copied()
}

#[inline(always)]
pub fn network_of_vni(vni: u32) -> Option<u32> {
    // SAFETY: as above.
    unsafe { VNIS.get(VniKey { vni }) }.copied()
}

/// The sandbox at IPv4 `addr` on another host, on the overlay `vni`.
#[inline(always)]
pub fn remote_endpoint(vni: u32, addr: [u8; 4]) -> Option<&'static RemoteEndpoint> {
    // SAFETY: as above.
    unsafe { REMOTE_ENDPOINTS.get(RemoteEndpointKey::ipv4(vni, addr)) }
}

/// The overlay network whose subnet holds `addr`, if any.
#[inline(always)]
pub fn overlay_subnet(addr: [u8; 4]) -> Option<u32> {
    OVERLAY_SUBNETS.get(&Key::new(32, addr)).copied()
}
