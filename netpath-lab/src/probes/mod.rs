//! Traffic endpoints that tests, the bench and the demo run inside the lab's
//! sandboxes and namespaces as `netpath-lab PROBE ARGS`. Each prints one JSON
//! object with what it saw, so a claim about the data path is checked at the
//! receiver; a server first prints a "listening" line (`announce`), which
//! `start_sink` waits for.
pub mod dns;
pub mod malformed;
pub mod rr;
pub mod tcp;
pub mod udp;
pub mod wire;

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, ChildStdout, Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Deterministic, incompressible-looking payload (xorshift).
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints the "listening" line `start_sink` waits for.
pub fn announce(addr: SocketAddr) {
    println!("{}", serde_json::json!({ "listening": addr.to_string() }));
    let _ = std::io::stdout().flush();
}

/// Starts a sink in the background and waits for its "listening" line.
pub fn start_sink(mut cmd: Command) -> Result<(Child, BufReader<ChildStdout>)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("starting sink")?;
    let mut out = BufReader::new(child.stdout.take().context("sink stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("listening") {
        let _ = child.kill();
        bail!("sink did not start: {line:?}");
    }
    Ok((child, out))
}
