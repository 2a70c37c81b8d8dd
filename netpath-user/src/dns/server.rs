//! The resolver process (`netpath dns-serve`): a UDP socket and a TCP
//! listener per user-defined network, bound to its gateway address. It rereads the state
//! whenever the file changes, so names follow sandboxes as they come, go,
//! connect and disconnect, without a restart.
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

use crate::{config::Config, hostfiles, paths::Roots, signals, state::State};

const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

struct View {
    state: State,
    config: Config,
    seen: Option<SystemTime>,
}

impl View {
    /// Rereads the state when the file changed since the last read. Called
    /// before every answer, so a sandbox resolves the moment `run` returns.
    fn refresh(view: &RwLock<View>, roots: &Roots) {
        let modified = std::fs::metadata(roots.state_file()).and_then(|m| m.modified()).ok();
        if view.read().expect("view lock").seen == modified {
            return;
        }
        // The state file is replaced by rename, so a read sees a whole version.
        let state: State =
            std::fs::read(roots.state_file()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let config = Config::load(&roots.config).unwrap_or_default();
        *view.write().expect("view lock") = View { state, config, seen: modified };
    }
}

struct Listener {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listener {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

pub fn serve(roots: Roots) -> Result<i32> {
    signals::install();
    let view = Arc::new(RwLock::new(View { state: State::default(), config: Config::default(), seen: None }));
    let mut listeners: HashMap<Ipv4Addr, Listener> = HashMap::new();
    let mut idle_rounds = 0;
    while !signals::interrupted() {
        View::refresh(&view, &roots);
        let wanted: Vec<Ipv4Addr> = {
            let v = view.read().expect("view lock");
            v.state.networks.values().filter(|n| n.has_resolver()).map(|n| n.gateway).collect()
        };
        for &gw in &wanted {
            let std::collections::hash_map::Entry::Vacant(slot) = listeners.entry(gw) else { continue };
            let addr = SocketAddrV4::new(gw, 53);
            match (UdpSocket::bind(addr), TcpListener::bind(addr)) {
                (Ok(udp), Ok(tcp)) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    let (v, s, r) = (view.clone(), stop.clone(), roots.clone());
                    let udp_thread = std::thread::spawn(move || listen(udp, gw, &v, &s, &r));
                    let (v, s, r) = (view.clone(), stop.clone(), roots.clone());
                    let tcp_thread = std::thread::spawn(move || listen_tcp(tcp, gw, &v, &s, &r));
                    slot.insert(Listener { stop, threads: vec![udp_thread, tcp_thread] });
                }
                (Err(e), _) | (_, Err(e)) => eprintln!("resolver: cannot listen on {addr}: {e}"),
            }
        }
        let gone: Vec<Ipv4Addr> = listeners.keys().filter(|g| !wanted.contains(g)).copied().collect();
        for gw in gone {
            if let Some(l) = listeners.remove(&gw) {
                l.stop();
            }
        }
        // Nothing to serve for a while: the last user-defined network went.
        idle_rounds = if wanted.is_empty() { idle_rounds + 1 } else { 0 };
        if idle_rounds > 10 {
            break;
        }
        signals::sleep_unless_interrupted(Duration::from_millis(200));
    }
    for (_, l) in listeners {
        l.stop();
    }
    Ok(0)
}

fn listen(sock: UdpSocket, gateway: Ipv4Addr, view: &RwLock<View>, stop: &AtomicBool, roots: &Roots) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
        let SocketAddr::V4(peer) = peer else { continue };
        if let Some(r) = respond(gateway, *peer.ip(), &buf[..n], view, roots) {
            let _ = sock.send_to(&r, peer);
        }
    }
}

/// DNS over TCP (RFC 7766): two-byte length, then the message; one
/// question per connection is all resolvers send after a truncated answer.
fn listen_tcp(listener: TcpListener, gateway: Ipv4Addr, view: &RwLock<View>, stop: &AtomicBool, roots: &Roots) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::SeqCst) {
        let (mut stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else { continue };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(UPSTREAM_TIMEOUT));
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            continue;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut query).is_err() {
            continue;
        }
        if let Some(r) = respond(gateway, *peer.ip(), &query, view, roots) {
            let mut framed = (r.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&r);
            let _ = stream.write_all(&framed);
        }
    }
}

fn respond(gateway: Ipv4Addr, asker: Ipv4Addr, query: &[u8], view: &RwLock<View>, roots: &Roots) -> Option<Vec<u8>> {
    View::refresh(view, roots);
    let answer = {
        let v = view.read().expect("view lock");
        answer(&v, gateway, asker, query)
    };
    match answer {
        Answer::Local(bytes) => Some(bytes),
        Answer::Forward(upstreams) => forward(&upstreams, query).or_else(|| servfail(query)),
        Answer::Drop => None,
    }
}

enum Answer {
    Local(Vec<u8>),
    Forward(Vec<Ipv4Addr>),
    Drop,
}

/// Addresses `name` has on the networks the asking sandbox shares with it,
/// the network the question arrived on first.
fn lookup(state: &State, gateway: Ipv4Addr, asker: Ipv4Addr, name: &str) -> Option<Vec<Ipv4Addr>> {
    let asking = state.sandboxes.values().find(|s| s.attachments.iter().any(|a| a.ip == asker))?;
    let here = state.networks.values().find(|n| n.gateway == gateway)?;
    let mut nets: Vec<&str> = vec![here.name.as_str()];
    nets.extend(asking.attachments.iter().map(|a| a.network.as_str()).filter(|n| *n != here.name));
    for net in nets {
        if !state.networks.get(net).is_some_and(|n| n.has_resolver()) {
            continue;
        }
        let ips: Vec<Ipv4Addr> = state
            .attachments_on(net)
            .filter(|(s, a)| {
                s.name.eq_ignore_ascii_case(name)
                    || a.aliases.iter().any(|al| al.eq_ignore_ascii_case(name))
                    || s.id[..12].eq_ignore_ascii_case(name)
            })
            .map(|(_, a)| a.ip)
            .collect();
        if !ips.is_empty() {
            return Some(ips);
        }
    }
    None
}

fn answer(view: &View, gateway: Ipv4Addr, asker: Ipv4Addr, query: &[u8]) -> Answer {
    let Ok(msg) = Message::from_vec(query) else { return Answer::Drop };
    let upstreams = || {
        let asking = view.state.sandboxes.values().find(|s| s.attachments.iter().any(|a| a.ip == asker));
        let internal = view.state.networks.values().any(|n| n.gateway == gateway && n.internal);
        match asking {
            _ if internal => Vec::new(),
            Some(s) => hostfiles::upstreams(&view.config.dns, s),
            None => Vec::new(),
        }
    };
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query || msg.queries().len() != 1 {
        return Answer::Forward(upstreams());
    }
    let q = &msg.queries()[0];
    let name = q.name().to_ascii();
    let name = name.trim_end_matches('.');
    let Some(ips) = lookup(&view.state, gateway, asker, name) else {
        return Answer::Forward(upstreams());
    };
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(q.clone());
    if q.query_type() == RecordType::A {
        let owner: Name = q.name().clone();
        for ip in ips {
            reply.add_answer(Record::from_rdata(owner.clone(), TTL, RData::A(A(ip))));
        }
    }
    reply.to_vec().map(Answer::Local).unwrap_or(Answer::Drop)
}

fn forward(upstreams: &[Ipv4Addr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else { continue };
        let _ = sock.set_read_timeout(Some(UPSTREAM_TIMEOUT));
        if sock.send_to(query, (*up, 53)).is_err() {
            continue;
        }
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_response_code(ResponseCode::ServFail);
    for q in msg.queries() {
        reply.add_query(q.clone());
    }
    reply.to_vec().ok()
}
