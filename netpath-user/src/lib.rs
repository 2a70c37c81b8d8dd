//! netpath: Docker's bridge networking with the per-packet work in eBPF.
//! The `netpath` CLI calls into this library, and so does the test and
//! benchmark rig (`netpath-lab`), which depends on it (never the reverse).
pub mod background;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod conntrack;
pub mod datapath;
pub mod dns;
pub mod docker_plugin;
pub mod ethtool;
pub mod external;
pub mod format;
pub mod host;
pub mod hostfiles;
pub mod info;
pub mod inspect;
pub mod link;
pub mod lookup;
#[cfg(test)]
mod module_graph;
pub mod netns;
pub mod network;
pub mod paths;
pub mod publish;
pub mod sandbox;
pub mod signals;
pub mod state;
pub mod stats;
pub mod sysctl;
pub mod system;
pub mod teardown;
pub mod template;
pub mod validate;
