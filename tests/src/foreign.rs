//! Namespaces netpath does not own, as an engine or a user makes them
//! (`ip netns add`), for the bring-your-own-namespace and CNI tests: named
//! after the lab, removed when dropped, whatever netpath did or left.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, ensure};

use crate::Lab;

pub struct ForeignNs {
    pub name: String,
    pub path: PathBuf,
}

impl ForeignNs {
    /// `ip netns add LABID-TAG`, loopback up.
    pub fn add(lab: &Lab, tag: &str) -> Result<ForeignNs> {
        let name = format!("{}-{tag}", lab.id);
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        ensure!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = ForeignNs { path: PathBuf::from("/run/netns").join(&name), name };
        ns.cmd("ip")?.args(["link", "set", "lo", "up"]).status()?;
        Ok(ns)
    }

    /// A command inside the namespace (network namespace only, as `nsenter --net`).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        netpath::netns::Join::net(&self.path).command(program)
    }

    /// `netpath-lab PROBE ...` inside the namespace.
    pub fn probe(&self, lab: &Lab, args: &[&str]) -> Command {
        let mut cmd = self.cmd(&lab.lab_bin).expect("probe command");
        cmd.args(args);
        cmd
    }

    /// The interfaces in the namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        netpath::netns::run_in(&self.path, || netpath::link::Rtnl::new()?.link_names())
    }

    pub fn is_live(&self) -> bool {
        netpath::netns::is_live(&self.path)
    }
}

impl Drop for ForeignNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
