//! Types shared by the kernel programs and the loader: every BPF map's key and
//! value, laid out `#[repr(C)]` so both sides (and `bpftool`, through BTF) read
//! the same bytes. Addresses are stored as network-order bytes, ports in host
//! order, so that dumps read as written.
#![no_std]

/// Map names as they appear in the object file and under the pin directory.
pub mod csum;

pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const NETWORKS: &str = "NETWORKS";
    pub const UPLINKS: &str = "UPLINKS";
    pub const PUBLISHED: &str = "PUBLISHED";
    pub const PUBLISHED_RANGES: &str = "PUBLISHED_RANGES";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const HOST_ADDRS: &str = "HOST_ADDRS";
    pub const LINKS: &str = "LINKS";
    pub const SOCK_REVNAT: &str = "SOCK_REVNAT";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const ALL: &[&str] = &[
        ENDPOINTS,
        NETWORKS,
        UPLINKS,
        PUBLISHED,
        PUBLISHED_RANGES,
        CONNTRACK,
        HOST_ADDRS,
        SOCK_REVNAT,
        LINKS,
        CONFIG,
        STATS,
    ];
}

/// Program names as they appear in the object file and under the pin directory.
pub mod program_names {
    pub const FROM_CONTAINER: &str = "from_container";
    pub const FROM_UPLINK: &str = "from_uplink";
    pub const TO_UPLINK: &str = "to_uplink";
    pub const XDP_FROM_UPLINK: &str = "xdp_from_uplink";
    pub const SOCK_CONNECT4: &str = "sock_connect4";
    pub const SOCK_SENDMSG4: &str = "sock_sendmsg4";
    pub const SOCK_RECVMSG4: &str = "sock_recvmsg4";
}

pub const MAX_ENDPOINTS: usize = 16384;
pub const MAX_NETWORKS: usize = 1024;
pub const MAX_UPLINKS: usize = 64;
pub const MAX_PUBLISHED: usize = 65536;
/// Published port ranges are searched only when no single-port mapping
/// matched, and only for the first packet of a flow.
pub const MAX_PUBLISHED_RANGES: usize = 64;
pub const MAX_HOST_ADDRS: usize = 256;
pub const SOCK_REVNAT_ENTRIES: usize = 65536;
/// Default conntrack capacity; the loader may size it from the config.
pub const DEFAULT_CONNTRACK_ENTRIES: usize = 262144;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A sandbox interface address, the key of [`map_names::ENDPOINTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ipv4: [u8; 4],
}

/// Where a sandbox address lives: the host-side veth whose peer is the
/// sandbox's interface, and the network the address belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub host_ifindex: u32,
    pub network_id: u32,
    pub mac: [u8; 6],
    /// [`endpoint_flags`], so the fast path needs no other lookup.
    pub flags: u16,
}

pub mod endpoint_flags {
    /// The endpoint's network has ICC off (set by the loader).
    pub const NO_ICC: u16 = 1;
    /// Some connection was DNATed to this endpoint from a sandbox (hairpin),
    /// so its replies to sandboxes must be looked up in conntrack (set by
    /// the data path, never cleared while the endpoint lives).
    pub const HAIRPIN_TARGET: u16 = 2;
    /// The sandbox side of the veth takes frames redirected by XDP (its GRO
    /// is on, which gives it the NAPI queue they arrive on); without it the
    /// uplink's XDP program leaves the packet to TC.
    pub const XDP_TARGET: u16 = 4;
}

pub mod network_flags {
    /// Traffic leaving the host is source-NATed to the uplink address.
    pub const MASQUERADE: u32 = 1;
    /// No traffic may leave the network's subnet.
    pub const INTERNAL: u32 = 2;
    /// Sandboxes of the network may not talk to each other, except linked pairs.
    pub const NO_ICC: u32 = 4;
}

/// Per-network policy, keyed by `Endpoint::network_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub flags: u32,
    pub subnet: [u8; 4],
    pub subnet_mask: [u8; 4],
    pub gateway: [u8; 4],
    /// Source address for masquerade; zero means the uplink's own.
    pub snat_addr: [u8; 4],
    pub gateway_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// An interface traffic leaves the host through, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uplink {
    pub addr: [u8; 4],
}

/// A published host port: which host address (zero for all) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishedKey {
    pub host_addr: [u8; 4],
    pub host_port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishedTarget {
    pub addr: [u8; 4],
    pub port: u16,
    pub _pad: u16,
}

/// A published range `host_first..=host_last` → `target_first + offset`, one
/// slot of [`map_names::PUBLISHED_RANGES`]; a zero `proto` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishedRange {
    pub host_addr: [u8; 4],
    pub host_first: u16,
    pub host_last: u16,
    pub target_addr: [u8; 4],
    pub target_first: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// A connection as seen on the wire at the point netpath handles it. For
/// ICMP echo the identifier stands in as `sport` (requests) or `dport`
/// (replies).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The same connection seen from the other side.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

pub mod ct_state {
    pub const SYN_SENT: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const CLOSING: u8 = 3;
    pub const UDP: u8 = 4;
    pub const ICMP: u8 = 5;
}

pub mod ct_flags {
    pub const SNAT: u8 = 1;
    pub const DNAT: u8 = 2;
    /// The entry describes the reply direction of the connection.
    pub const REPLY: u8 = 4;
}

/// One direction of a tracked connection: how to rewrite packets matching
/// the key, and when the direction was last seen. Each connection has two
/// entries, each naming the other as `pair`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub rewrite: FlowKey,
    pub pair: FlowKey,
    pub last_seen_ns: u64,
    pub state: u8,
    pub flags: u8,
    pub _pad: [u8; 6],
}

pub const MAX_LINKS: usize = 16384;

/// A pair of sandbox addresses allowed to talk on a network without ICC
/// (`--link`); stored in both directions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinkKey {
    pub from: [u8; 4],
    pub to: [u8; 4],
}

/// A UDP socket and the sandbox address it was steered to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    pub cookie: u64,
    pub addr: [u8; 4],
    pub port: u16,
    pub _pad: u16,
}

/// The address that socket's process asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevValue {
    pub addr: [u8; 4],
    pub port: u16,
    pub _pad: u16,
}

/// Data-path settings, the single slot of [`map_names::CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    pub ct_syn_timeout_s: u32,
    pub ct_established_timeout_s: u32,
    pub ct_closing_timeout_s: u32,
    pub ct_udp_timeout_s: u32,
    pub ct_icmp_timeout_s: u32,
    pub published_range_count: u32,
    /// Socket programs act only in this network namespace.
    pub host_netns_cookie: u64,
}

impl DatapathConfig {
    /// How long a conntrack entry in `state` lives without traffic, in ns;
    /// the one rule both the programs (lazily) and the userspace sweep apply.
    #[inline(always)]
    pub const fn timeout_ns(&self, state: u8) -> u64 {
        let s = match state {
            ct_state::SYN_SENT => self.ct_syn_timeout_s,
            ct_state::ESTABLISHED => self.ct_established_timeout_s,
            ct_state::CLOSING => self.ct_closing_timeout_s,
            ct_state::UDP => self.ct_udp_timeout_s,
            _ => self.ct_icmp_timeout_s,
        };
        s as u64 * 1_000_000_000
    }

    /// Whether an entry last seen at `last_seen_ns` is gone by `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, state: u8, last_seen_ns: u64, now_ns: u64) -> bool {
        now_ns.saturating_sub(last_seen_ns) > self.timeout_ns(state)
    }
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            ct_syn_timeout_s: 60,
            ct_established_timeout_s: 21600,
            ct_closing_timeout_s: 10,
            ct_udp_timeout_s: 60,
            ct_icmp_timeout_s: 30,
            published_range_count: 0,
            host_netns_cookie: 0,
        }
    }
}

/// Entry programs; each owns one slot of [`map_names::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    FromContainer = 0,
    FromUplink = 1,
    ToUplink = 2,
    Socket = 3,
    XdpFromUplink = 4,
}

impl Program {
    pub const ALL: [Program; 5] =
        [Program::FromContainer, Program::FromUplink, Program::ToUplink, Program::Socket, Program::XdpFromUplink];

    pub const fn name(self) -> &'static str {
        match self {
            Program::FromContainer => program_names::FROM_CONTAINER,
            Program::FromUplink => program_names::FROM_UPLINK,
            Program::ToUplink => program_names::TO_UPLINK,
            Program::Socket => "socket",
            Program::XdpFromUplink => program_names::XDP_FROM_UPLINK,
        }
    }
}

pub const PROGRAM_COUNT: usize = Program::ALL.len();

macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// Per-CPU outcome counters of one entry program, a slot of
        /// [`map_names::STATS`]. `passed_*` packets continue through the
        /// kernel's own path; `dropped_*` packets are gone.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl Counters {
            pub const FIELD_COUNT: usize = [$(stringify!($field)),*].len();

            /// Field names and values in declaration order.
            pub fn fields(&self) -> [(&'static str, u64); Self::FIELD_COUNT] {
                [$((stringify!($field), self.$field)),*]
            }

            pub fn add(&mut self, other: &Counters) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters! {
    /// Delivered straight into a sandbox of the same network.
    forwarded_packets,
    forwarded_bytes,
    /// Translated (NAT) and delivered by the program.
    nat_packets,
    nat_bytes,
    /// New connections to a published port.
    dnat_new,
    /// New masqueraded connections.
    snat_new,
    /// ICMP errors about a translated connection, translated back.
    icmp_errors_translated,
    /// Host-local connections steered by the socket programs.
    socket_redirects,
    passed_not_ipv4,
    passed_no_endpoint,
    passed_unknown_source,
    passed_no_route,
    /// XDP: left to the TC programs (ICMP, IP options, fragments, new
    /// flows not to a published port, targets XDP cannot reach).
    passed_to_tc,
    dropped_malformed,
    dropped_redirect_failed,
    dropped_internal_network,
    /// Between sandboxes of different networks.
    dropped_other_network,
    /// Between sandboxes of a network with ICC off, not linked.
    dropped_icc,
    dropped_nat_port_exhausted,
    dropped_conntrack_full,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] structs of integers and byte arrays with
    // explicit padding fields; every bit pattern is valid.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::NetworkPolicy {}
    unsafe impl aya::Pod for super::Uplink {}
    unsafe impl aya::Pod for super::PublishedKey {}
    unsafe impl aya::Pod for super::PublishedTarget {}
    unsafe impl aya::Pod for super::PublishedRange {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::LinkKey {}
    unsafe impl aya::Pod for super::SockRevValue {}
    unsafe impl aya::Pod for super::Counters {}
}
