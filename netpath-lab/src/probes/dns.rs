//! DNS probes: a tiny upstream server for the lab's outside, and a `dig`
//! that asks a sandbox's own resolver (its /etc/resolv.conf) over UDP or TCP.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use netpath::signals;

use super::announce;

#[derive(Args, Debug)]
pub struct StubArgs {
    #[arg(long, default_value_t = 53)]
    port: u16,
    #[arg(long)]
    name: String,
    #[arg(long)]
    addr: Ipv4Addr,
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct DigArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    server: Option<Ipv4Addr>,
    /// Ask over TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
}

/// Answers A queries for NAME with ADDR, NXDOMAIN otherwise, until TIMEOUT
/// (or an interrupt); prints how many it served.
pub fn stub(StubArgs { port, name, addr, timeout }: StubArgs) -> Result<i32> {
    let timeout = Duration::from_secs(timeout);
    use hickory_proto::{
        op::{Message, MessageType, ResponseCode},
        rr::{RData, Record, rdata::A},
    };
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    announce(sock.local_addr()?);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    let mut served = 0;
    while Instant::now() < deadline && !signals::interrupted() {
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
        let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
        let mut r = Message::new();
        r.set_id(q.id()).set_message_type(MessageType::Response).set_recursion_available(true);
        for query in q.queries() {
            r.add_query(query.clone());
            if query.name().to_ascii().trim_end_matches('.').eq_ignore_ascii_case(&name) {
                r.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A(addr))));
            } else {
                r.set_response_code(ResponseCode::NXDomain);
            }
        }
        sock.send_to(&r.to_vec()?, peer)?;
        served += 1;
    }
    println!("{}", serde_json::json!({ "served": served }));
    Ok(0)
}

/// Asks the first nameserver of /etc/resolv.conf (or SERVER) for NAME's A
/// records; prints the server, the response code and the answers.
pub fn dig(DigArgs { name, server, tcp }: DigArgs) -> Result<i32> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, RecordType},
    };
    let server = match server {
        Some(s) => s,
        None => std::fs::read_to_string("/etc/resolv.conf")?
            .lines()
            .find_map(|l| l.strip_prefix("nameserver").and_then(|a| a.trim().parse().ok()))
            .context("no nameserver in /etc/resolv.conf")?,
    };
    let mut q = Message::new();
    q.set_id(0x4e50).set_recursion_desired(true).add_query(Query::query(Name::from_ascii(&name)?, RecordType::A));
    let query = q.to_vec()?;
    let reply = if tcp {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::from((server, 53)), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).context("no answer")?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply)?;
        reply
    } else {
        let sock = UdpSocket::bind(("0.0.0.0", 0))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.send_to(&query, (server, 53))?;
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).context("no answer")?;
        buf[..n].to_vec()
    };
    let r = Message::from_vec(&reply)?;
    let answers: Vec<String> = r
        .answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"server": server.to_string(), "rcode": r.response_code().to_string(), "answers": answers})
    );
    Ok(0)
}
