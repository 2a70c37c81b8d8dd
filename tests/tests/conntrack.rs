//! Conntrack that holds: only a SYN opens a TCP connection, a flood of
//! half-open connections from forged sources cannot evict established ones,
//! and a thousand concurrent connections from two sandboxes to one outside
//! address and port all get through a table sized for 1,024 (their source
//! ports collide on purpose). Everything is checked at the endpoints: every
//! message of every flow arrives, every connection echoes.
use std::{
    collections::{BTreeMap, HashSet},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use netpath_common::ct_state;
use netpath_tests::{
    At, Lab, all_counters, bridge_of,
    frames::{self, Capture, Mac, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG},
    lab, moved, sandbox_ns, tcp_check, words,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

struct Macs {
    outside: Mac,
    uplink: Mac,
}

fn macs(lab: &Lab) -> Macs {
    Macs {
        outside: frames::mac_of(&lab.outside_ns, "eth0").unwrap(),
        uplink: frames::mac_of(&lab.host_ns, "uplink0").unwrap(),
    }
}

fn get(m: &BTreeMap<(&'static str, &'static str), u64>, program: &str, reason: &str) -> u64 {
    m.iter().find(|((p, r), _)| *p == program && *r == reason).map(|(_, n)| *n).unwrap_or(0)
}

#[test]
fn only_a_syn_opens_a_connection() {
    let lab = lab("ct-syn");
    lab.netpath_ok(&words("network create n1 --subnet 10.70.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name web --network n1 --ip 10.70.0.10 -p 8080:80 -p 8081:81")).unwrap();
    lab.netpath_ok(&words("run -d --name a --network n1 --ip 10.70.0.20")).unwrap();
    let m = macs(&lab);
    let a_mac = frames::mac_of(&sandbox_ns(&lab, "a"), "eth0").unwrap();
    let gw = frames::mac_of(&lab.host_ns, &bridge_of(&lab, "n1").unwrap()).unwrap();
    let wire = Capture::open(&lab.outside_ns, "eth0").unwrap();
    let at_web = Capture::open(&sandbox_ns(&lab, "web"), "eth0").unwrap();

    // Null, RST, XMAS and a bare ACK at the published port; an ACK, a RST
    // and a null segment from a sandbox to the outside.
    let client = addr("198.18.0.1:45000");
    let published = addr("198.18.0.2:8080");
    let inbound: Vec<_> = [0, TCP_RST, TCP_FIN | TCP_PSH | TCP_URG, TCP_ACK]
        .map(|f| frames::tcp(m.uplink, m.outside, client, published, f, 1000))
        .to_vec();
    let outbound: Vec<_> = [TCP_ACK, TCP_RST, 0]
        .map(|f| frames::tcp(gw, a_mac, addr("10.70.0.20:45001"), addr("198.18.0.1:7000"), f, 1))
        .to_vec();
    let before = all_counters(&lab);
    assert_eq!(frames::send(&lab.outside_ns, "eth0", &inbound).unwrap(), 4);
    assert_eq!(frames::send(&sandbox_ns(&lab, "a"), "eth0", &outbound).unwrap(), 3);
    let m1 = moved(&before, &all_counters(&lab));
    assert_eq!(get(&m1, "from_uplink", "DROP_CT_NOT_SYN"), 4, "{m1:?}");
    // Dropped on the sandbox's veth, which masquerades what it routes out
    // itself.
    assert_eq!(get(&m1, "from_container", "DROP_CT_NOT_SYN"), 3, "{m1:?}");
    assert_eq!(get(&m1, "to_uplink", "DROP_CT_NOT_SYN"), 0, "{m1:?}");
    assert_eq!(get(&m1, "from_uplink", "DNAT_NEW") + get(&m1, "to_uplink", "SNAT_NEW"), 0, "{m1:?}");
    assert!(lab.datapath().conntrack_entries().unwrap().is_empty(), "no entry for a packet that is not a SYN");
    // At the victims: nothing reached the sandbox, nothing of the sandbox's
    // left the host.
    std::thread::sleep(Duration::from_millis(200));
    let to_web: Vec<_> = at_web.ipv4().into_iter().filter(|p| p[9] == 6).collect();
    assert!(to_web.is_empty(), "{} TCP packets reached the sandbox", to_web.len());
    let leaked: Vec<_> =
        wire.ipv4().iter().map(|p| frames::ipv4_addrs(p)).filter(|(s, _)| s.octets()[..2] == [10, 70]).collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    // A SYN opens a connection, but only a half-open one (nothing listens,
    // the sandbox answers with a RST).
    let syn = frames::tcp(m.uplink, m.outside, client, published, TCP_SYN, 1000);
    let before = all_counters(&lab);
    assert_eq!(frames::send(&lab.outside_ns, "eth0", &[syn]).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get(&moved(&before, &all_counters(&lab)), "from_uplink", "DNAT_NEW"), 1);
    let dp = lab.datapath();
    assert_eq!(dp.conntrack().unwrap().keys().count(), 0, "nothing confirmed");
    let new: Vec<_> = dp.conntrack_new().unwrap().iter().map(|r| r.unwrap()).collect();
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|(_, e)| e.state != ct_state::ESTABLISHED), "{new:?}");

    // A forged SYN and a blind ACK: the ACK cannot acknowledge the SYN-ACK
    // it never saw, so nothing is confirmed.
    let _listener = frames::in_netns(&sandbox_ns(&lab, "web"), || Ok(TcpListener::bind("0.0.0.0:81")?)).unwrap();
    let (forged, p81) = (addr("100.64.1.1:45002"), addr("198.18.0.2:8081"));
    let syn = frames::tcp(m.uplink, m.outside, forged, p81, TCP_SYN, 5000);
    assert_eq!(frames::send(&lab.outside_ns, "eth0", &[syn]).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(100));
    let ack = frames::tcp(m.uplink, m.outside, forged, p81, TCP_ACK, 5001);
    assert_eq!(frames::send(&lab.outside_ns, "eth0", &[ack]).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(100));
    let new: Vec<_> = dp.conntrack_new().unwrap().iter().map(|r| r.unwrap()).collect();
    assert!(
        new.iter().any(|(k, e)| k.saddr == [100, 64, 1, 1] && e.state == ct_state::SYN_RECV),
        "the sandbox answered the SYN: {new:?}"
    );
    assert_eq!(dp.conntrack().unwrap().keys().count(), 0, "a blind ACK confirms nothing");

    // A real handshake confirms it.
    tcp_check(&lab, At::Sandbox("web"), 80, At::Outside, "198.18.0.2:8080", 1000).unwrap();
    let confirmed: Vec<_> = dp.conntrack().unwrap().iter().map(|r| r.unwrap()).collect();
    assert!(
        confirmed.iter().any(|(k, _)| k.saddr == [10, 70, 0, 10] && k.sport == 80),
        "the connection moved to the confirmed table: {confirmed:?}"
    );
}

/// One TCP connection of the flood test and who speaks first in it.
struct Flow {
    client: TcpStream,
    server: TcpStream,
    server_first: bool,
    name: &'static str,
}

fn message(name: &str, i: usize, round: usize, reply: bool) -> [u8; 32] {
    let mut m = [b' '; 32];
    let text = format!("{name} {i} {round} {}", if reply { "re" } else { "msg" });
    m[..text.len()].copy_from_slice(text.as_bytes());
    m
}

/// One exchange on every flow: the first speaker sends, the other reads and
/// answers, the first reads the answer; both checked byte for byte.
fn round(flows: &mut [Flow], r: usize) -> Result<()> {
    for (i, f) in flows.iter_mut().enumerate() {
        let (first, second) =
            if f.server_first { (&mut f.server, &mut f.client) } else { (&mut f.client, &mut f.server) };
        let (msg, re) = (message(f.name, i, r, false), message(f.name, i, r, true));
        first.write_all(&msg)?;
        let mut got = [0u8; 32];
        second.read_exact(&mut got).with_context(|| format!("{} flow {i} round {r}", f.name))?;
        ensure!(got == msg, "{} flow {i} round {r}: wrong bytes", f.name);
        second.write_all(&re)?;
        first.read_exact(&mut got).with_context(|| format!("{} flow {i} round {r} answer", f.name))?;
        ensure!(got == re, "{} flow {i} round {r}: wrong answer", f.name);
    }
    Ok(())
}

fn flow(client: TcpStream, server: TcpStream, server_first: bool, name: &'static str) -> Flow {
    for s in [&client, &server] {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
    }
    Flow { client, server, server_first, name }
}

#[test]
fn established_flows_survive_a_syn_flood() {
    let lab = lab("ct-flood");
    lab.configure(r#"{"conntrack-max": 1024}"#).unwrap();
    lab.netpath_ok(&words("network create n1 --subnet 10.71.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name web --network n1 --ip 10.71.0.10 -p 8080:80")).unwrap();
    lab.netpath_ok(&words("run -d --name a --network n1 --ip 10.71.0.20")).unwrap();
    let m = macs(&lab);
    let web = frames::in_netns(&sandbox_ns(&lab, "web"), || Ok(TcpListener::bind("0.0.0.0:80")?)).unwrap();
    let far = frames::in_netns(&lab.outside_ns, || Ok(TcpListener::bind("198.18.0.1:7000")?)).unwrap();
    let mut flows = Vec::new();
    // 10 through the published port, 10 masqueraded; half of each kind
    // client-first, half server-push.
    for i in 0..10 {
        let c = frames::in_netns(&lab.outside_ns, || Ok(TcpStream::connect("198.18.0.2:8080")?)).unwrap();
        flows.push(flow(c, web.accept().unwrap().0, i % 2 == 1, "published"));
    }
    for i in 0..10 {
        let c = frames::in_netns(&sandbox_ns(&lab, "a"), || Ok(TcpStream::connect("198.18.0.1:7000")?)).unwrap();
        flows.push(flow(c, far.accept().unwrap().0, i % 2 == 1, "masquerade"));
    }
    round(&mut flows, 0).unwrap();

    // 20,000 SYNs from as many forged sources at the published port, sent
    // while the flows keep talking (rounds every 200 ms), then more rounds.
    let published = addr("198.18.0.2:8080");
    let flood: Vec<Vec<u8>> = (0..20_000u32)
        .map(|i| {
            let src = SocketAddrV4::new(Ipv4Addr::from(0x6440_0000 + i), 1024 + (i % 60_000) as u16);
            frames::tcp(m.uplink, m.outside, src, published, TCP_SYN, i)
        })
        .collect();
    let before = all_counters(&lab);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut sent = 0;
            for chunk in flood.chunks(1000) {
                sent += frames::send(&lab.outside_ns, "eth0", chunk)?;
            }
            anyhow::Ok(sent)
        });
        for r in 1..=5 {
            round(&mut flows, r).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(sender.join().unwrap().unwrap(), 20_000);
    });
    for r in 6..=8 {
        round(&mut flows, r).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let m1 = moved(&before, &all_counters(&lab));
    // Every forged SYN opened a half-open connection: the flood was real.
    assert!(get(&m1, "from_uplink", "DNAT_NEW") >= 20_000, "{m1:?}");
    assert_eq!(get(&m1, "from_uplink", "DROP_CONNTRACK_FULL"), 0, "{m1:?}");
    let dp = lab.datapath();
    let (confirmed_cap, new_cap) = netpath::datapath::conntrack_capacity(Some(1024));
    let new = dp.conntrack_new().unwrap().keys().count();
    assert!(new <= new_cap as usize, "{new}");
    let confirmed: Vec<_> = dp.conntrack().unwrap().iter().map(|r| r.unwrap()).collect();
    assert!(confirmed.len() <= confirmed_cap as usize);
    // Both directions of all 20 flows are still there.
    assert!(confirmed.len() >= 40, "{}", confirmed.len());
    for (k, e) in &confirmed {
        assert!(dp.conntrack().unwrap().get(&e.pair, 0).is_ok(), "{k:?} lost its pair");
    }
}

/// A TCP connection from `local` (bound first, so two sandboxes can use the
/// very same ports) to `to`.
fn connect_from(local: SocketAddrV4, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: plain libc calls on a socket owned from creation on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let (l, t) = (sockaddr(local), sockaddr(to));
        // A connect that cannot complete fails the test instead of hanging it.
        let timeout = libc::timeval { tv_sec: TIMEOUT.as_secs() as i64, tv_usec: 0 };
        let size = std::mem::size_of::<libc::timeval>() as u32;
        libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&timeout as *const libc::timeval).cast(), size);
        if libc::bind(raw, (&l as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(raw, (&t as *const libc::sockaddr_in).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TcpStream::from(fd))
    }
}

#[test]
fn a_thousand_outbound_connections_from_two_sandboxes() {
    let lab = lab("ct-outbound");
    lab.configure(r#"{"conntrack-max": 1024}"#).unwrap();
    lab.netpath_ok(&words("network create n1 --subnet 10.72.0.0/24")).unwrap();
    lab.netpath_ok(&words("run -d --name a --network n1 --ip 10.72.0.10")).unwrap();
    lab.netpath_ok(&words("run -d --name b --network n1 --ip 10.72.0.20")).unwrap();
    let server = frames::in_netns(&lab.outside_ns, || Ok(TcpListener::bind("198.18.0.1:7100")?)).unwrap();
    let to = addr("198.18.0.1:7100");
    let per_sandbox = 500u16;
    let total = 2 * per_sandbox as usize;
    let before = all_counters(&lab);
    let (accepted, clients) = std::thread::scope(|s| {
        let acceptor = s.spawn(|| {
            // Polled with a deadline, so missing connections fail the test.
            server.set_nonblocking(true)?;
            let deadline = std::time::Instant::now() + 3 * TIMEOUT;
            let mut accepted = Vec::new();
            while accepted.len() < total && std::time::Instant::now() < deadline {
                match server.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(false)?;
                        accepted.push((stream, peer));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => return Err(e),
                }
            }
            std::io::Result::Ok(accepted)
        });
        let clients: Vec<_> = [("a", Ipv4Addr::new(10, 72, 0, 10)), ("b", Ipv4Addr::new(10, 72, 0, 20))]
            .map(|(name, ip)| {
                let ns = sandbox_ns(&lab, name);
                s.spawn(move || {
                    frames::in_netns(&ns, || {
                        // The same source ports in both sandboxes: every
                        // one of them collides on the uplink's address.
                        (0..per_sandbox)
                            .map(|i| connect_from(SocketAddrV4::new(ip, 41000 + i), to).context("connect"))
                            .collect::<Result<Vec<_>>>()
                    })
                })
            })
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        (acceptor.join().unwrap().unwrap(), clients)
    });
    let clients: Vec<TcpStream> = clients.into_iter().flatten().collect();
    assert_eq!(clients.len(), total);
    assert_eq!(accepted.len(), total);
    // All 1,000 are open at once: each says its number, the server echoes.
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        (&*c).write_all(&(i as u32).to_be_bytes()).unwrap();
    }
    for (s, _) in &accepted {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut b = [0u8; 4];
        (&*s).read_exact(&mut b).unwrap();
        (&*s).write_all(&b).unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        let mut b = [0u8; 4];
        (&*c).read_exact(&mut b).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(u32::from_be_bytes(b), i as u32);
    }
    let peers: HashSet<SocketAddrV4> = accepted
        .iter()
        .map(|(_, p)| match p {
            std::net::SocketAddr::V4(p) => *p,
            p => panic!("{p}"),
        })
        .collect();
    assert_eq!(peers.len(), total, "every connection has its own port on the uplink address");
    assert!(peers.iter().all(|p| *p.ip() == Ipv4Addr::new(198, 18, 0, 2)));
    let m1 = moved(&before, &all_counters(&lab));
    assert!(get(&m1, "to_uplink", "SNAT_NEW") >= total as u64, "{m1:?}");
    for program in ["from_container", "to_uplink"] {
        assert_eq!(get(&m1, program, "DROP_NAT_PORTS_EXHAUSTED"), 0, "{m1:?}");
    }
}
