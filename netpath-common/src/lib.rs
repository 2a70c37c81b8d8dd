//! Types shared by the kernel programs and the loader: every BPF map's key and
//! value, laid out `#[repr(C)]` so both sides (and `bpftool`, through BTF) read
//! the same bytes.
#![no_std]

/// Map names as they appear in the object file and under the pin directory.
pub mod map_names {
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const STATS: &str = "STATS";
    pub const ALL: &[&str] = &[ENDPOINTS, STATS];
}

/// Program names as they appear in the object file and under the pin directory.
pub mod program_names {
    pub const FROM_CONTAINER: &str = "from_container";
}

/// Capacity of the endpoint table: one entry per sandbox address on this host.
pub const MAX_ENDPOINTS: usize = 16384;

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
    pub _pad: [u8; 2],
}

/// Entry programs; each owns one slot of [`map_names::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    FromContainer = 0,
}

impl Program {
    pub const ALL: [Program; 1] = [Program::FromContainer];

    pub const fn name(self) -> &'static str {
        match self {
            Program::FromContainer => program_names::FROM_CONTAINER,
        }
    }
}

pub const PROGRAM_COUNT: usize = Program::ALL.len();

/// Per-CPU outcome counters of one entry program, a slot of
/// [`map_names::STATS`]. `passed_*` packets continue through the kernel's own
/// path (bridge, routing); `dropped_*` packets are gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub passed_not_ipv4: u64,
    pub passed_no_endpoint: u64,
    pub passed_other_network: u64,
    pub passed_unknown_source: u64,
    pub dropped_malformed: u64,
    pub dropped_redirect_failed: u64,
}

impl Counters {
    /// Field names and values in declaration order, for tables and metrics.
    pub fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("forwarded_packets", self.forwarded_packets),
            ("forwarded_bytes", self.forwarded_bytes),
            ("passed_not_ipv4", self.passed_not_ipv4),
            ("passed_no_endpoint", self.passed_no_endpoint),
            ("passed_other_network", self.passed_other_network),
            ("passed_unknown_source", self.passed_unknown_source),
            ("dropped_malformed", self.dropped_malformed),
            ("dropped_redirect_failed", self.dropped_redirect_failed),
        ]
    }

    pub fn add(&mut self, other: &Counters) {
        self.forwarded_packets += other.forwarded_packets;
        self.forwarded_bytes += other.forwarded_bytes;
        self.passed_not_ipv4 += other.passed_not_ipv4;
        self.passed_no_endpoint += other.passed_no_endpoint;
        self.passed_other_network += other.passed_other_network;
        self.passed_unknown_source += other.passed_unknown_source;
        self.dropped_malformed += other.dropped_malformed;
        self.dropped_redirect_failed += other.dropped_redirect_failed;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] structs of integers and byte arrays with
    // explicit padding fields; every bit pattern is valid.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Counters {}
}
