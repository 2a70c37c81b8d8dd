//! Types shared by the kernel programs and the loader: every BPF map's key and
//! value, laid out `#[repr(C)]` so both sides (and `bpftool`, through BTF) read
//! the same bytes. Addresses are stored as network-order bytes, ports in host
//! order, so that dumps read as written.
#![no_std]

pub mod csum;

/// Map names as they appear in the object file and under the pin directory.
/// The list of them all is [`map_layout::ALL`], which also gives each
/// map's layout.
pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const NETWORKS: &str = "NETWORKS";
    pub const UPLINKS: &str = "UPLINKS";
    pub const PUBLISHED: &str = "PUBLISHED";
    pub const PUBLISHED_RANGES: &str = "PUBLISHED_RANGES";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const CT_NEW: &str = "CT_NEW";
    pub const FRAGS: &str = "FRAGS";
    pub const HOST_ADDRS: &str = "HOST_ADDRS";
    pub const LINKS: &str = "LINKS";
    pub const SOCK_REVNAT: &str = "SOCK_REVNAT";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const VETHS: &str = "VETHS";
    pub const OVERLAY_NETWORKS: &str = "OVERLAY_NETWORKS";
    pub const VNIS: &str = "VNIS";
    pub const REMOTE_ENDPOINTS: &str = "REMOTE_ENDPOINTS";
    pub const OVERLAY_SUBNETS: &str = "OVERLAY_SUBNETS";
}

/// The layout of every pinned map, versioned. A newer build reuses the maps
/// an older one pinned (conntrack and all) and only swaps the programs, so
/// the two must agree on every map's key and value layout.
///
/// Bump [`map_layout::VERSION`] whenever any key or value type below, a map's
/// kind, or the meaning of a field changes; the loader then refuses to run
/// over pins of another version (or migrates them, where it knows how). The
/// sizes in [`map_layout::ALL`] are also checked against the pins, to catch a
/// forgotten bump.
pub mod map_layout {
    use super::*;

    /// Version 1: the first versioned layout (maps as of the VETHS map;
    /// CT_NEW and FRAGS were added to it later, created empty by an
    /// upgrade, since no existing map changed; so were the overlay's
    /// OVERLAY_NETWORKS, VNIS, REMOTE_ENDPOINTS and OVERLAY_SUBNETS. The overlay also added a
    /// program, whose STATS slots an older, smaller STATS lacks: it then
    /// goes uncounted until `netpath system reset`).
    pub const VERSION: u32 = 1;

    /// A pinned map as this build expects it: name, key size, value size.
    pub struct MapLayout {
        pub name: &'static str,
        pub key_size: usize,
        pub value_size: usize,
    }

    const fn map<K, V>(name: &'static str) -> MapLayout {
        MapLayout { name, key_size: size_of::<K>(), value_size: size_of::<V>() }
    }

    /// Every map of the object, each once: the loader pins these (a map
    /// missing here would be neither pinned nor carried over).
    pub const ALL: &[MapLayout] = &[
        map::<EndpointKey, Endpoint>(map_names::ENDPOINTS),
        map::<u32, NetworkPolicy>(map_names::NETWORKS),
        map::<u32, Uplink>(map_names::UPLINKS),
        map::<PublishedKey, PublishedTarget>(map_names::PUBLISHED),
        map::<u32, PublishedRange>(map_names::PUBLISHED_RANGES),
        map::<FlowKey, CtEntry>(map_names::CONNTRACK),
        map::<[u8; 4], u8>(map_names::HOST_ADDRS),
        map::<SockRevKey, SockRevValue>(map_names::SOCK_REVNAT),
        map::<LinkKey, u8>(map_names::LINKS),
        map::<u32, DatapathConfig>(map_names::CONFIG),
        map::<u32, ReasonStats>(map_names::STATS),
        map::<VethKey, EndpointKey>(map_names::VETHS),
        map::<FlowKey, CtEntry>(map_names::CT_NEW),
        map::<FragKey, FragPorts>(map_names::FRAGS),
        map::<u32, OverlayNetwork>(map_names::OVERLAY_NETWORKS),
        map::<VniKey, u32>(map_names::VNIS),
        map::<RemoteEndpointKey, RemoteEndpoint>(map_names::REMOTE_ENDPOINTS),
        map::<SubnetKey4, u32>(map_names::OVERLAY_SUBNETS),
    ];
}

/// Program names as they appear in the object file and under the pin directory.
pub mod program_names {
    pub const FROM_CONTAINER: &str = "from_container";
    pub const FROM_UPLINK: &str = "from_uplink";
    pub const TO_UPLINK: &str = "to_uplink";
    pub const XDP_FROM_UPLINK: &str = "xdp_from_uplink";
    pub const FROM_OVERLAY: &str = "from_overlay";
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
/// Overlay networks this host takes part in.
pub const MAX_OVERLAY_NETWORKS: usize = 1024;
/// The UDP port of the overlay's VXLAN device (IANA's, RFC 7348): the
/// loader makes the device with it, the data path knows its own tunnel
/// traffic by it.
pub const VXLAN_PORT: u16 = 4789;
/// Sandbox addresses on other hosts, over every overlay network.
pub const MAX_REMOTE_ENDPOINTS: usize = 65536;
pub const SOCK_REVNAT_ENTRIES: usize = 65536;
/// Default `conntrack-max`: connections, as Linux's `nf_conntrack_max`
/// counts them (each has two direction entries). 131,072 keeps the memory of
/// the earlier 262,144-entry table (about 30 MiB preallocated) and is far
/// more than a 2-core host serves at once: it sustains about 35,000 new
/// connections/s (bench), so the table holds several seconds of full-rate
/// churn before the LRU recycles closed connections, and established flows
/// never compete with half-open ones (they live in [`map_names::CT_NEW`]).
pub const DEFAULT_CONNTRACK_MAX: u32 = 131072;
/// Room an LRU map needs beyond what it must hold: the kernel keeps up to
/// 128 free nodes per CPU on local lists and evicts when a CPU's list runs
/// dry, so a table filled to its nominal size would evict early.
pub const LRU_SLACK_PER_CPU: u32 = 256;

/// Entries of [`map_names::CONNTRACK`] (established connections, both
/// directions) for `conntrack_max` connections on `cpus` CPUs.
pub const fn conntrack_entries(conntrack_max: u32, cpus: u32) -> u32 {
    2 * conntrack_max + LRU_SLACK_PER_CPU * cpus
}

/// Entries of [`map_names::CT_NEW`] (connections not yet confirmed from
/// both sides, both directions): half as many connections as the
/// established table. A flood of new connections churns only this table,
/// as Linux's `early_drop` sacrifices unassured entries first.
pub const fn ct_new_entries(conntrack_max: u32, cpus: u32) -> u32 {
    conntrack_max + LRU_SLACK_PER_CPU * cpus
}

/// Compiled-in sizes; the loader always sets them from the config.
pub const DEFAULT_CONNTRACK_ENTRIES: usize = 2 * DEFAULT_CONNTRACK_MAX as usize;
pub const DEFAULT_CT_NEW_ENTRIES: usize = DEFAULT_CONNTRACK_MAX as usize;
/// Datagrams in flight as fragments whose first piece was seen.
pub const FRAG_ENTRIES: usize = 8192;

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

/// A sandbox's host-side veth, the key of [`map_names::VETHS`]: which
/// endpoint (sandbox address) sits behind it, so frames that carry no IPv4
/// source (ARP, IPv6, anything else) are checked against the sandbox's own
/// address and MAC. `--network container:X` joiners share the owner's veth.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VethKey {
    pub host_ifindex: u32,
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
    /// The responder answered the SYN; the originator has not confirmed.
    pub const SYN_RECV: u8 = 6;
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
    /// (Original direction, in [`map_names::CT_NEW`].) The responder has
    /// answered; the originator's next packet confirms the connection, which
    /// then moves to [`map_names::CONNTRACK`].
    pub const SEEN_REPLY: u8 = 8;
}

impl CtEntry {
    /// The entry of the other direction, rebuilt from this one (each
    /// direction fully determines the other): what repairs a connection
    /// whose other half the LRU evicted.
    pub const fn pair_entry(&self, key: &FlowKey) -> CtEntry {
        CtEntry {
            rewrite: key.reversed(),
            pair: *key,
            last_seen_ns: self.last_seen_ns,
            state: self.state,
            flags: (self.flags ^ ct_flags::REPLY) & !ct_flags::SEEN_REPLY,
            _pad: [0; 2],
            handshake_ack: 0,
        }
    }
}

/// A fragmented datagram, keyed as Cilium's fragment map does: both
/// addresses, the IP identification and the protocol. Addresses are 16
/// bytes and the identification 32 bits so IPv6 (whose fragment header
/// carries a 32-bit one) fits the same map; IPv4 uses the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub id: u32,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}

/// The transport ports of a fragmented datagram, from its first piece (as
/// [`FlowKey`] holds them: for ICMP echo, the identifier).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
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
    pub _pad: [u8; 2],
    /// (TCP, original direction, in [`map_names::CT_NEW`].) What the
    /// originator's handshake ACK must acknowledge: the responder's SYN-ACK
    /// sequence number plus one. A blind ACK from a forged source cannot
    /// know it, so it confirms nothing.
    pub handshake_ack: u32,
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
            ct_state::SYN_SENT | ct_state::SYN_RECV => self.ct_syn_timeout_s,
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
            // Half-open connections live in their own table and a
            // retransmitted SYN opens a fresh entry, so a short timeout
            // costs a slow handshake nothing.
            ct_syn_timeout_s: 20,
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
    FromOverlay = 5,
}

impl Program {
    pub const ALL: [Program; 6] = [
        Program::FromContainer,
        Program::FromUplink,
        Program::ToUplink,
        Program::Socket,
        Program::XdpFromUplink,
        Program::FromOverlay,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Program::FromContainer => program_names::FROM_CONTAINER,
            Program::FromUplink => program_names::FROM_UPLINK,
            Program::ToUplink => program_names::TO_UPLINK,
            Program::Socket => "socket",
            Program::XdpFromUplink => program_names::XDP_FROM_UPLINK,
            Program::FromOverlay => program_names::FROM_OVERLAY,
        }
    }
}

pub const PROGRAM_COUNT: usize = Program::ALL.len();

/// Reason slots per program in [`map_names::STATS`]: room for the IPv6
/// reasons to come without moving any existing slot.
pub const REASON_SLOTS: usize = 64;
pub const STATS_SLOTS: usize = PROGRAM_COUNT * REASON_SLOTS;

/// The last slot of each program in [`map_names::STATS`] belongs to no
/// reason: only a build with the kernel crate's `upgrade-probe` feature
/// counts every packet there too, so the upgrade test can tell the new
/// programs from the old ones by what they count.
pub const UPGRADE_PROBE_SLOT: usize = REASON_SLOTS - 1;

/// The slot of `reason` for `program` in [`map_names::STATS`].
#[inline(always)]
pub const fn stats_slot(program: Program, reason: Reason) -> u32 {
    program as u32 * REASON_SLOTS as u32 + reason as u32
}

/// What one verdict slot counted on one CPU (summed over CPUs by readers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonStats {
    pub packets: u64,
    pub bytes: u64,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $value:literal => $name:literal,)*) => {
        /// Why a program let a packet go the way it did: every verdict of
        /// every program is exactly one of these, counted (packets and
        /// bytes) in the program's slot of [`map_names::STATS`] by the
        /// program's single exit. `FORWARDED`/NAT reasons: the program
        /// delivered or translated the packet; `PASS_*`: it continues
        /// through the kernel's own path; `DROP_*`: it is gone.
        /// Values are stable (userspace and pinned maps agree on them);
        /// 0..16 deliver/translate, 16..32 pass, 32.. drop, with gaps left
        /// for the IPv6 reasons.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant = $value,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The name `netpath stats` prints, the same everywhere.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            pub fn from_name(name: &str) -> Option<Reason> {
                Self::ALL.iter().copied().find(|r| r.name() == name)
            }
        }
    };
}

reasons! {
    /// Delivered straight into a sandbox of the same network.
    Forwarded = 0 => "FORWARDED",
    /// A packet of a tracked (translated) connection, rewritten.
    Nat = 1 => "NAT",
    /// First packet of a connection to a published port (or a hairpin),
    /// recorded and rewritten.
    DnatNew = 2 => "DNAT_NEW",
    /// First packet of a masqueraded connection, recorded and rewritten.
    SnatNew = 3 => "SNAT_NEW",
    /// An ICMP error about a translated connection, translated.
    IcmpErrorTranslated = 4 => "ICMP_ERROR_TRANSLATED",
    /// A host-local connect/send steered to a published sandbox port.
    SocketRedirect = 5 => "SOCKET_REDIRECT",
    /// A UDP reply shown as coming from the address the process asked.
    SocketReplyRestored = 6 => "SOCKET_REPLY_RESTORED",
    /// A later fragment of a translated datagram: addresses rewritten as its
    /// first piece's were (found by IP identification).
    FragmentTranslated = 7 => "FRAGMENT_TRANSLATED",
    /// To a sandbox of the same overlay network on another host:
    /// encapsulated (VXLAN, the network's VNI) towards that host's VTEP.
    Encapsulated = 8 => "ENCAPSULATED",
    /// Arrived encapsulated from another host's sandbox, checked, and
    /// delivered straight into the destination sandbox.
    Decapsulated = 9 => "DECAPSULATED",
    /// An ARP request for a sandbox on another host, answered from
    /// REMOTE_ENDPOINTS back into the asking sandbox.
    ArpReplied = 10 => "ARP_REPLIED",
    /// From a sandbox to beyond this host: routed by the data path itself
    /// (FIB lookup, one hop of TTL, next hop's MACs), translated there (its
    /// connection's rewrite, or masquerade for a new one) and redirected
    /// out of the uplink, whose egress counts the verdict handed over with
    /// it in the mark (`NAT`, `SNAT_NEW`, ...); no netfilter FORWARD hook.
    RedirectUplink = 11 => "REDIRECT_UPLINK",

    /// Not IPv4 (uplinks: ARP, IPv6, ... are the kernel's).
    PassNotIpv4 = 16 => "PASS_NOT_IPV4",
    /// ARP a sandbox sent about itself; the bridge and the kernel answer.
    PassArp = 17 => "PASS_ARP",
    /// No connection, endpoint or published port of netpath's: traffic of
    /// the host itself.
    PassNotOurs = 18 => "PASS_NOT_OURS",
    /// From a sandbox to the host, the gateway or beyond, not yet tracked,
    /// and not for an uplink the data path can route to itself (local,
    /// expiring TTL, too big for the route, IP options, another interface):
    /// the kernel routes it (masquerade happens on the uplink).
    PassRouted = 19 => "PASS_ROUTED",
    /// A tracked connection leaving the host that the data path does not
    /// route itself (as for `PASS_ROUTED`): translated on the uplink.
    PassTrackedToUplink = 20 => "PASS_TRACKED_TO_UPLINK",
    /// The source's network does not masquerade.
    PassMasqueradeOff = 21 => "PASS_MASQUERADE_OFF",
    /// Masquerade wanted but the uplink has no address recorded.
    PassNoUplinkAddress = 22 => "PASS_NO_UPLINK_ADDRESS",
    /// The sandbox's network has no policy entry (being created or removed).
    PassNoNetwork = 23 => "PASS_NO_NETWORK",
    /// A fragment: no complete transport header, the kernel's to handle.
    PassFragment = 24 => "PASS_FRAGMENT",
    /// A protocol (or ICMP type) NAT does not translate.
    PassOtherProtocol = 25 => "PASS_OTHER_PROTOCOL",
    /// An ICMP error whose quoted header NAT does not handle (IP options,
    /// other protocols).
    PassIcmpQuoteUnsupported = 26 => "PASS_ICMP_QUOTE_UNSUPPORTED",
    /// Translated, but its TTL runs out here: the kernel answers with time
    /// exceeded.
    PassTtlExpiring = 27 => "PASS_TTL_EXPIRING",
    /// XDP: left to the TC programs (IP options, fragments, ICMP, expiring
    /// TTL, a target that cannot take XDP frames, a refused connection).
    PassToTc = 28 => "PASS_TO_TC",
    /// VXLAN for this host with an outer UDP checksum (other VTEPs may set
    /// one; netpath's own encapsulation does not): left to the VXLAN
    /// device, which verifies it, and to `from_overlay` behind it.
    PassOverlayChecksum = 29 => "PASS_OVERLAY_CHECKSUM",
    /// VXLAN for this host the uplink does not strip itself: outer IP
    /// options, headers beyond the socket buffer's linear part, or the
    /// kernel refused the strip. The VXLAN device decapsulates it and
    /// `from_overlay` checks and delivers it.
    PassOverlayToKernel = 30 => "PASS_OVERLAY_TO_KERNEL",

    /// Too short or inconsistent headers.
    DropMalformed = 32 => "DROP_MALFORMED",
    /// A sandbox sent IPv4 from an address that is not its own.
    DropSpoofedSource = 33 => "DROP_SPOOFED_SOURCE",
    /// A sandbox sent a frame from a MAC that is not its own.
    DropSpoofedMac = 34 => "DROP_SPOOFED_MAC",
    /// A sandbox sent ARP whose sender address or MAC is not its own.
    DropSpoofedArp = 35 => "DROP_SPOOFED_ARP",
    /// IPv6 from a sandbox whose network has no IPv6 (none has yet).
    DropNoIpv6 = 36 => "DROP_NO_IPV6",
    /// From a sandbox, neither IPv4, ARP nor IPv6.
    DropUnknownL3 = 37 => "DROP_UNKNOWN_L3",
    /// A frame on a sandbox veth netpath has no endpoint for.
    DropUnknownVeth = 38 => "DROP_UNKNOWN_VETH",
    /// Between sandboxes of different networks.
    DropOtherNetwork = 39 => "DROP_OTHER_NETWORK",
    /// Between sandboxes of a network with ICC off, not linked.
    DropIcc = 40 => "DROP_ICC",
    /// Leaving the subnet of an `--internal` network.
    DropInternalNetwork = 41 => "DROP_INTERNAL_NETWORK",
    /// A header rewrite (address, port, checksum, TTL, MAC) failed.
    DropWriteFailed = 42 => "DROP_WRITE_FAILED",
    /// The redirect into the sandbox failed.
    DropRedirectFailed = 43 => "DROP_REDIRECT_FAILED",
    /// A hairpin packet whose TTL runs out here.
    DropTtlExceeded = 44 => "DROP_TTL_EXCEEDED",
    /// No source port left for a new translated connection.
    DropNatPortsExhausted = 45 => "DROP_NAT_PORTS_EXHAUSTED",
    /// The conntrack table refused a new connection.
    DropConntrackFull = 46 => "DROP_CONNTRACK_FULL",
    /// TCP of no known connection that is not a SYN (null, ACK, RST, XMAS,
    /// a reply whose entry is gone): it may not open one, and without one
    /// it cannot be translated.
    DropCtNotSyn = 47 => "DROP_CT_NOT_SYN",
    /// A later fragment whose first piece was not seen (or not let
    /// through): its ports, and so its connection, are unknown.
    DropFragNoFirst = 48 => "DROP_FRAG_NO_FIRST",
    /// An ICMP error a sandbox sent about a connection that is not its own.
    DropIcmpErrorNotOwn = 49 => "DROP_ICMP_ERROR_NOT_OWN",
    /// An ICMP error from outside that no router would send about that
    /// connection (parameter problem, or port/protocol unreachable from
    /// another host than the one the quoted packet went to).
    DropIcmpErrorImplausible = 50 => "DROP_ICMP_ERROR_IMPLAUSIBLE",
    /// Arrived on the overlay device with no tunnel metadata or a VNI of no
    /// overlay network of this host.
    DropOverlayUnknownVni = 51 => "DROP_OVERLAY_UNKNOWN_VNI",
    /// Arrived on the overlay with an inner source that is no sandbox of
    /// that VNI at the sending VTEP: forged, or from a host that left.
    DropOverlaySpoofedSource = 52 => "DROP_OVERLAY_SPOOFED_SOURCE",
    /// Arrived on the overlay for an address that is no sandbox of that
    /// network on this host.
    DropOverlayUnknownDestination = 53 => "DROP_OVERLAY_UNKNOWN_DESTINATION",
    /// Setting the tunnel metadata or the redirect to the overlay device failed.
    DropOverlayEncapFailed = 54 => "DROP_OVERLAY_ENCAP_FAILED",
    /// Arrived on the overlay neither IPv4 nor anything a sandbox may send
    /// another host (ARP is answered on each host, never tunnelled).
    DropOverlayNotIpv4 = 55 => "DROP_OVERLAY_NOT_IPV4",
    /// From a sandbox for an address of its own overlay network that no
    /// sandbox holds, here or on any host (never given, or its host left
    /// the cluster): there is no host to tunnel it to.
    DropOverlayNoEndpoint = 56 => "DROP_OVERLAY_NO_ENDPOINT",
    /// VXLAN for this host whose header breaks RFC 7348: the I flag unset,
    /// or a reserved bit set (the kernel's VXLAN device drops these too).
    DropOverlayBadVxlan = 57 => "DROP_OVERLAY_BAD_VXLAN",
}

impl Reason {
    /// Whether packets with this verdict are gone.
    pub const fn is_drop(self) -> bool {
        self as u32 >= 32
    }
}

/// How a sandbox's veth hands the uplink's verdict to the uplink's egress in
/// `skb->mark` (the kernel's `handoff.rs` says why there): netpath's tag in
/// the upper half says whose mark it is, the [`Reason`] in the lower half is
/// what the uplink's egress counts. Read and written here only, by the
/// kernel programs and the tests that check the marks they leave.
pub mod handoff {
    use super::Reason;

    /// "np": the mark is netpath's.
    pub const TAG: u32 = 0x6e70_0000;
    pub const TAG_MASK: u32 = 0xffff_0000;

    /// The mark that hands `reason` over.
    #[inline(always)]
    pub const fn mark(reason: Reason) -> u32 {
        TAG | reason as u32
    }

    /// Whether `mark` carries netpath's tag (whatever reason it names).
    #[inline(always)]
    pub const fn is_ours(mark: u32) -> bool {
        mark & TAG_MASK == TAG
    }

    /// The verdict `mark` hands over: only the reasons `from_container`
    /// hands over (a match, no search of every reason). A mark of ours
    /// naming any other reason hands nothing over.
    #[inline(always)]
    pub const fn reason(mark: u32) -> Option<Reason> {
        if !is_ours(mark) {
            return None;
        }
        match mark & !TAG_MASK {
            r if r == Reason::Nat as u32 => Some(Reason::Nat),
            r if r == Reason::SnatNew as u32 => Some(Reason::SnatNew),
            r if r == Reason::FragmentTranslated as u32 => Some(Reason::FragmentTranslated),
            r if r == Reason::PassMasqueradeOff as u32 => Some(Reason::PassMasqueradeOff),
            r if r == Reason::PassNoUplinkAddress as u32 => Some(Reason::PassNoUplinkAddress),
            _ => None,
        }
    }
}

/// What one program counted, summed over CPUs: one [`ReasonStats`] per
/// reason slot. Built by userspace from [`map_names::STATS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    pub slots: [ReasonStats; REASON_SLOTS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters { slots: [ReasonStats::default(); REASON_SLOTS] }
    }
}

impl Counters {
    pub fn get(&self, reason: Reason) -> ReasonStats {
        self.slots[reason as usize]
    }

    pub fn packets(&self, reason: Reason) -> u64 {
        self.get(reason).packets
    }

    pub fn bytes(&self, reason: Reason) -> u64 {
        self.get(reason).bytes
    }

    /// Every named reason with what it counted, in [`Reason::ALL`] order.
    pub fn reasons(&self) -> impl Iterator<Item = (Reason, ReasonStats)> + '_ {
        Reason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    pub fn add_slot(&mut self, slot: usize, s: &ReasonStats) {
        if let Some(mine) = self.slots.get_mut(slot) {
            mine.packets += s.packets;
            mine.bytes += s.bytes;
        }
    }

    /// What moved since `before`, per reason.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut d = Counters::default();
        for (i, (a, b)) in self.slots.iter().zip(before.slots.iter()).enumerate() {
            d.slots[i] =
                ReasonStats { packets: a.packets.saturating_sub(b.packets), bytes: a.bytes.saturating_sub(b.bytes) };
        }
        d
    }
}

/// The VXLAN network identifier of an overlay network, the key of
/// [`map_names::VNIS`] (value: the local network id, `Endpoint::network_id`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VniKey {
    pub vni: u32,
}

/// How a local network (keyed by `Endpoint::network_id` in
/// [`map_names::OVERLAY_NETWORKS`]) reaches its other hosts: its VNI and
/// the `collect_md` VXLAN device packets are handed to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayNetwork {
    pub vni: u32,
    pub tunnel_ifindex: u32,
}

pub mod addr_family {
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// A sandbox address on another host, the key of
/// [`map_names::REMOTE_ENDPOINTS`]: the overlay network's VNI and the
/// address, 16 bytes so IPv6 fits the same map (IPv4 uses the first 4, the
/// rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RemoteEndpointKey {
    pub vni: u32,
    /// [`addr_family`].
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl RemoteEndpointKey {
    pub const fn ipv4(vni: u32, addr: [u8; 4]) -> Self {
        RemoteEndpointKey {
            vni,
            family: addr_family::IPV4,
            _pad: [0; 3],
            addr: [addr[0], addr[1], addr[2], addr[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }
}

/// Where a remote sandbox lives: its host's VTEP (underlay address, 16
/// bytes for IPv6 underlays) and its MAC, which becomes the inner
/// destination MAC and answers ARP for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub vtep: [u8; 16],
    /// [`addr_family`] of `vtep`.
    pub vtep_family: u8,
    /// None defined yet (room for per-endpoint policy).
    pub flags: u8,
    pub mac: [u8; 6],
}

/// An IPv4 subnet as the key of the LPM trie [`map_names::OVERLAY_SUBNETS`]
/// (value: the local network id): the kernel's `bpf_lpm_trie_key` layout,
/// prefix length first. IPv6 gets a trie of its own, as Cilium keeps one
/// per family.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetKey4 {
    pub prefix_len: u32,
    pub addr: [u8; 4],
}

impl RemoteEndpoint {
    pub const fn vtep_ipv4(&self) -> [u8; 4] {
        [self.vtep[0], self.vtep[1], self.vtep[2], self.vtep[3]]
    }
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
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragPorts {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::SockRevKey {}
    unsafe impl aya::Pod for super::LinkKey {}
    unsafe impl aya::Pod for super::SockRevValue {}
    unsafe impl aya::Pod for super::ReasonStats {}
    unsafe impl aya::Pod for super::VethKey {}
    unsafe impl aya::Pod for super::VniKey {}
    unsafe impl aya::Pod for super::OverlayNetwork {}
    unsafe impl aya::Pod for super::RemoteEndpointKey {}
    unsafe impl aya::Pod for super::RemoteEndpoint {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_direction_rebuilds_the_other() {
        // A masqueraded connection as `open` records it.
        let key =
            FlowKey { saddr: [10, 0, 0, 2], daddr: [198, 18, 0, 1], sport: 40000, dport: 80, proto: 6, _pad: [0; 3] };
        let to = FlowKey { saddr: [198, 18, 0, 2], sport: 33000, ..key };
        let orig = CtEntry {
            rewrite: to,
            pair: to.reversed(),
            last_seen_ns: 7,
            state: ct_state::ESTABLISHED,
            flags: ct_flags::SNAT | ct_flags::SEEN_REPLY,
            _pad: [0; 2],
            handshake_ack: 99,
        };
        let reply = orig.pair_entry(&key);
        assert_eq!(reply.rewrite, key.reversed(), "the reply is rewritten back to what the sandbox sent");
        assert_eq!(reply.pair, key);
        assert_eq!(reply.flags, ct_flags::SNAT | ct_flags::REPLY);
        let again = reply.pair_entry(&orig.pair);
        assert_eq!(again, CtEntry { flags: ct_flags::SNAT, handshake_ack: 0, ..orig });
    }

    #[test]
    fn conntrack_max_counts_connections() {
        assert_eq!(conntrack_entries(1024, 2), 2048 + 512);
        assert_eq!(ct_new_entries(1024, 2), 1024 + 512);
        let cfg = DatapathConfig::default();
        assert!(cfg.timeout_ns(ct_state::SYN_RECV) < cfg.timeout_ns(ct_state::ESTABLISHED));
    }

    #[test]
    fn a_handoff_mark_names_only_a_verdict_handed_over() {
        for r in [Reason::Nat, Reason::SnatNew, Reason::FragmentTranslated, Reason::PassMasqueradeOff] {
            assert_eq!(handoff::reason(handoff::mark(r)), Some(r));
        }
        assert_eq!(handoff::reason(handoff::mark(Reason::PassNoUplinkAddress)), Some(Reason::PassNoUplinkAddress));
        // Ours, but nothing the veth hands over: judged afresh.
        assert!(handoff::is_ours(handoff::mark(Reason::Forwarded)));
        assert_eq!(handoff::reason(handoff::mark(Reason::Forwarded)), None);
        // Someone else's mark, even with a handed-over reason's low half.
        assert_eq!(handoff::reason(0x1234_0000 | Reason::Nat as u32), None);
        assert_eq!(handoff::reason(0), None);
    }
}
