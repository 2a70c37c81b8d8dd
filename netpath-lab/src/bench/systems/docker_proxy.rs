//! docker-proxy (Docker's userland proxy, `/usr/sbin/docker-proxy`) as a
//! system under test for host-local access: one process per port and
//! protocol on 127.0.0.1, run standalone in the iptables lab. The evidence
//! is the proxies' own work (CPU ticks plus read/write system calls).
use std::{net::Ipv4Addr, process::Command};

use anyhow::Result;

use crate::bench::{
    catalog::{Scenario, System},
    testbed::{Evidence, Place, Route, Testbed, wait_listening},
    topology::{IPERF_PORT, PROXY_IPERF, PROXY_RR, RR_PORT, SERVER_IP},
};

pub const DOCKER_PROXY: &str = "/usr/sbin/docker-proxy";

/// Starts the proxies in `tb`'s lab host towards `server`, with their route
/// and evidence.
pub fn add(tb: &mut Testbed, server: &Place) -> Result<()> {
    let host = tb.host.clone();
    let mut pids = Vec::new();
    for (proto, hp, cp) in [
        ("tcp", PROXY_IPERF, IPERF_PORT),
        ("udp", PROXY_IPERF, IPERF_PORT),
        ("tcp", PROXY_RR, RR_PORT),
        ("udp", PROXY_RR, RR_PORT),
    ] {
        let mut cmd = host.cmd(DOCKER_PROXY)?;
        cmd.args(["-proto", proto, "-host-ip", "127.0.0.1", "-host-port", &hp.to_string()]);
        cmd.args(["-container-ip", &SERVER_IP.to_string(), "-container-port", &cp.to_string()]);
        give_fd3(&mut cmd)?;
        pids.push(tb.procs.spawn(cmd, false)?);
    }
    wait_listening(&host, PROXY_RR)?;
    tb.routes.push(Route {
        system: System::DockerProxy,
        scenario: Scenario::HostLocal,
        client: host,
        server: server.clone(),
        addr: Ipv4Addr::LOCALHOST,
        iperf_port: PROXY_IPERF,
        rr_port: PROXY_RR,
    });
    tb.evidence.push((System::DockerProxy, Box::new(ProxyWork(pids))));
    Ok(())
}

/// docker-proxy reports readiness to dockerd on fd 3 and exits at once
/// when it is not open: give it /dev/null there.
fn give_fd3(cmd: &mut Command) -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::options().write(true).open("/dev/null")?;
    // SAFETY: dup2 is async-signal-safe; the file stays open in the closure.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::dup2(null.as_raw_fd(), 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// The work of these proxy processes: what moves only when they carry the
/// scenario's traffic.
pub struct ProxyWork(pub Vec<u32>);

impl Evidence for ProxyWork {
    fn count(&self, _: Scenario, _: &Route) -> Result<u64> {
        Ok(work(&self.0))
    }
}

/// CPU ticks plus read/write system calls of `pids`.
pub fn work(pids: &[u32]) -> u64 {
    pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0) + io_syscalls(*p)).sum()
}

/// Read and write system calls a process made (/proc/PID/io syscr + syscw).
pub fn io_syscalls(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}
