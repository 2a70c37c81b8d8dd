//! `netpath docker-plugin`: a libnetwork remote network driver (scope
//! `local`) on a Unix socket, so that `docker network create -d netpath`
//! networks and their containers are wired, forwarded, masqueraded and
//! published by netpath's data path instead of Docker's bridge driver and
//! iptables.
//!
//! The plugin is a thin caller of the library, like the CLI: every request
//! takes the state lock, finishes whatever a killed predecessor left
//! (`system::recover`), does its work through the same functions `run`,
//! `rm` and `network create` use, and saves. It keeps nothing in memory
//! between requests, so it can be killed at any moment and restarted.
//!
//! - [`protocol`]: the messages, as moby's `libnetwork/drivers/remote/api`.
//! - [`handlers`]: each call mapped onto library functions.
//! - [`server`]: HTTP/1.1 on the Unix socket Docker finds in
//!   `/run/docker/plugins`.
//! - [`engine_api`]: the few Docker Engine API reads `netpath port` needs
//!   (Docker does not show a remote driver's ports: moby/libnetwork#2451).
pub mod engine_api;
pub mod handlers;
pub mod protocol;
pub mod server;

/// Where Docker looks for plugin sockets, and the one it finds as `netpath`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netpath.sock";
/// The driver name Docker knows the plugin by (the socket's file name).
pub const DRIVER_NAME: &str = "netpath";
/// Who owns the namespaces of the plugin's sandboxes (`Mode::External`).
pub const OWNER: &str = "docker";
