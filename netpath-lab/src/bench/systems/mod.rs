//! The systems under test, one file each, every one built in its own
//! hermetic lab with the same topology (`topology`) and torn down before
//! the next: each answers "how does a client at X reach the servers at Y"
//! per scenario (its routes) and "did traffic go through me" (its evidence).
pub mod bounds;
pub mod bridge;
pub mod docker;
pub mod docker_netpath;
pub mod docker_proxy;
pub mod engine;
pub mod iptables;
pub mod netpath;
pub mod netpath_overlay;
pub mod podman;
pub mod podman_netpath;
