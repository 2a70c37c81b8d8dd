//! `netpath-lab demo` (what `cargo xtask run` shows): a lab with two
//! sandboxes on one network, traffic between them and out through the
//! masquerade, and the data path's counters live until Ctrl-C or the
//! duration ends; then the lab is torn down.
use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use netpath::{signals, stats};

use crate::fixture::{Binaries, Lab, OUTSIDE_IP};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seconds to run before tearing down by itself.
    #[arg(long, default_value_t = 600)]
    duration: u64,
}

pub fn run(bins: &Binaries, DemoArgs { duration }: DemoArgs) -> Result<i32> {
    let duration = Duration::from_secs(duration);
    signals::install();
    eprintln!("building the lab...");
    let lab = Lab::create("demo", bins)?;
    lab.netpath_ok(&["network", "create", "demo", "--subnet", "10.77.0.0/24"])?;
    lab.netpath_ok(&["run", "-d", "--name", "client", "--network", "demo"])?;
    let have_iperf = Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success());
    let server: &[&str] = if have_iperf { &["iperf3", "-s"] } else { &["sleep", "infinity"] };
    let mut args = vec!["run", "-d", "--name", "server", "--network", "demo", "--"];
    args.extend_from_slice(server);
    lab.netpath_ok(&args)?;
    let server_ip = "10.77.0.3";
    let pings = (duration.as_secs() * 5).to_string();
    let mut ping = lab
        .sandbox_cmd("client", "ping")?
        .args(["-q", "-i", "0.2", "-c", &pings, server_ip])
        .stdout(Stdio::null())
        .spawn()
        .context("starting ping")?;
    // And out through the masquerade to the outside namespace.
    let outside = OUTSIDE_IP.to_string();
    let mut ping_out = lab
        .sandbox_cmd("client", "ping")?
        .args(["-q", "-i", "0.5", "-c", &pings, &outside])
        .stdout(Stdio::null())
        .spawn()
        .context("starting ping")?;
    let datapath = lab.datapath();
    let started = Instant::now();
    let mut previous: Option<(Vec<_>, Instant)> = None;
    let mut burst: Option<std::process::Child> = None;
    while !signals::interrupted() && started.elapsed() < duration {
        if have_iperf && burst.as_mut().is_none_or(|b| b.try_wait().ok().flatten().is_some()) {
            burst = Some(
                lab.sandbox_cmd("client", "iperf3")?
                    .args(["-c", server_ip, "-t", "2", "-b", "500M"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        let now = stats::read(&datapath)?;
        let before = previous.as_ref().map(|(b, t): &(Vec<_>, Instant)| (b.as_slice(), t.elapsed()));
        print!("\x1b[2J\x1b[H");
        println!("netpath demo, lab {} — sandboxes client (10.77.0.2) and server ({server_ip})", lab.id);
        println!(
            "traffic: client pings server every 200 ms{} and the outside ({outside}, masqueraded) every 500 ms; Ctrl-C tears down\n",
            if have_iperf { ", iperf3 bursts" } else { "" }
        );
        print!("{}", stats::render(&now, before));
        let _ = std::io::stdout().flush();
        previous = Some((now, Instant::now()));
        signals::sleep_unless_interrupted(Duration::from_secs(1));
    }
    for child in [Some(&mut ping), Some(&mut ping_out), burst.as_mut()].into_iter().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
    eprintln!("tearing the lab down...");
    drop(lab);
    Ok(0)
}
