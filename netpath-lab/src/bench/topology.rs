//! The one topology every system under test is built in: a server sandbox
//! and a client sandbox on one network, the lab host, and the outside
//! namespace behind the uplink (`fixture::OUTSIDE_IP`), with the same
//! addresses and ports everywhere so the figures compare.
use std::net::Ipv4Addr;

pub const SUBNET: &str = "10.201.0.0/24";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 10);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 20);
/// Where filler mappings point (no sandbox has it: only rule/map size matters).
pub const FILLER_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 99);
/// iperf3 (TCP and UDP) in every server.
pub const IPERF_PORT: u16 = 5201;
/// The echo server (TCP and UDP) of the latency and connection probes.
pub const RR_PORT: u16 = 7000;
/// Host ports published for them.
pub const PUB_IPERF: u16 = 9000;
pub const PUB_RR: u16 = 9001;
/// Host ports docker-proxy listens on in the iptables lab.
pub const PROXY_IPERF: u16 = 9100;
pub const PROXY_RR: u16 = 9101;
/// Filler host ports for the scaling runs start here.
pub const FILLER_FIRST: u16 = 10000;
