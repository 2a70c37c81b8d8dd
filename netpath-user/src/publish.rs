//! Published ports, one name from the command line to the kernel:
//! `--publish` (`-p`) is parsed into a [`Spec`], host ports are chosen into
//! a [`Published`] (what a sandbox record keeps), and each is written to the
//! data path's `PUBLISHED` map (one entry per single port) or a range slot.
//! Parsing and allocation are pure: they see the ports already published as
//! a list, not the state they come from.
use std::{collections::HashMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use netpath_common::{IPPROTO_TCP, IPPROTO_UDP, MAX_PUBLISHED_RANGES, PublishedKey, PublishedRange, PublishedTarget};
use serde::{Deserialize, Serialize};

use crate::datapath::Datapath;

/// Where Docker hands out host ports for `-p CONTAINER_PORT`.
pub const EPHEMERAL_FIRST: u16 = 32768;
pub const EPHEMERAL_LAST: u16 = 60999;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port or range as stored: host ports
/// `host_first..=host_last` on `host_ip` lead to the same-sized container
/// range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub proto: Proto,
    pub host_ip: Ipv4Addr,
    pub host_first: u16,
    pub host_last: u16,
    pub container_first: u16,
    /// The range slot in the data path, when this mapping is a range.
    pub range_slot: Option<u32>,
}

impl Published {
    /// How many host ports the mapping covers (at least one).
    pub fn port_count(&self) -> u16 {
        self.host_last - self.host_first + 1
    }
}

/// What one `--publish` asked for, before host ports are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub proto: Proto,
    pub host_ip: Option<Ipv4Addr>,
    /// `None` means "any free port" for each container port.
    pub host: Option<(u16, u16)>,
    pub container: (u16, u16),
}

fn parse_range(text: &str, what: &str) -> Result<(u16, u16)> {
    let parse_port = |s: &str| -> Result<u16> {
        match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => bail!("invalid {what} port {s:?}"),
        }
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(text)?;
            (p, p)
        }
    };
    if last < first {
        bail!("invalid {what} port range {text:?}");
    }
    Ok((first, last))
}

/// Parses Docker's `[IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]`.
pub fn parse(spec: &str) -> Result<Spec> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => bail!("invalid proto {p:?} in {spec:?}: tcp or udp"),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), (!h.is_empty()).then_some(*h), *c),
        _ => bail!("invalid port specification {spec:?}"),
    };
    let host_ip = ip
        .map(|ip| ip.parse::<Ipv4Addr>().map_err(|_| anyhow::anyhow!("invalid IP address {ip:?} in {spec:?}")))
        .transpose()?;
    let container = parse_range(container, "container")?;
    let host = host.map(|h| parse_range(h, "host")).transpose()?;
    if let Some((hf, hl)) = host {
        let (hn, cn) = (hl - hf, container.1 - container.0);
        if hn != cn && cn != 0 {
            bail!("invalid port specification {spec:?}: host and container port ranges differ in size");
        }
    }
    Ok(Spec { proto, host_ip, host, container })
}

/// Host ports in use, one bitset per protocol and host address (0.0.0.0
/// standing for all of them): a check costs the same with 30,000 ports
/// published as with none.
struct TakenPorts(HashMap<(Proto, Ipv4Addr), Box<[u64; 1024]>>);

impl TakenPorts {
    fn of<'a>(existing: impl IntoIterator<Item = &'a Published>) -> TakenPorts {
        let mut taken = TakenPorts(HashMap::new());
        for m in existing {
            taken.insert(m);
        }
        taken
    }

    fn insert(&mut self, m: &Published) {
        let bits = self.0.entry((m.proto, m.host_ip)).or_insert_with(|| Box::new([0; 1024]));
        for port in m.host_first..=m.host_last {
            bits[usize::from(port / 64)] |= 1 << (port % 64);
        }
    }

    /// Whether a port of `first..=last` is in use for `ip` (or, for 0.0.0.0,
    /// for any address): a port bound to all addresses conflicts with the
    /// same port bound to one, both ways.
    fn any(&self, proto: Proto, ip: Ipv4Addr, first: u16, last: u16) -> bool {
        self.0
            .iter()
            .filter(|((p, a), _)| *p == proto && (ip.is_unspecified() || a.is_unspecified() || *a == ip))
            .any(|(_, bits)| (first..=last).any(|port| bits[usize::from(port / 64)] & (1 << (port % 64)) != 0))
    }
}

/// Chooses host ports for `specs` against the ports already published (and
/// each other), Docker's way: a fixed port must be free; `-p 80` takes the
/// lowest free ephemeral port; `-p 9000-9009:80` the first free port of the
/// range.
pub fn allocate<'a>(
    existing: impl IntoIterator<Item = &'a Published>,
    specs: &[Spec],
    default_ip: Ipv4Addr,
) -> Result<Vec<Published>> {
    let mut taken = TakenPorts::of(existing);
    let mut out: Vec<Published> = Vec::new();
    for r in specs {
        let ip = r.host_ip.unwrap_or(default_ip);
        let mut add = |taken: &mut TakenPorts, first: u16, last: u16, container_first: u16| -> Result<()> {
            if taken.any(r.proto, ip, first, last) {
                bail!("Bind for {ip}:{first} failed: port is already allocated");
            }
            let m = Published {
                proto: r.proto,
                host_ip: ip,
                host_first: first,
                host_last: last,
                container_first,
                range_slot: None,
            };
            taken.insert(&m);
            out.push(m);
            Ok(())
        };
        match r.host {
            Some((hf, hl)) if hl - hf == r.container.1 - r.container.0 => add(&mut taken, hf, hl, r.container.0)?,
            Some((hf, hl)) => {
                let port = (hf..=hl).find(|&p| !taken.any(r.proto, ip, p, p)).ok_or_else(|| {
                    anyhow::anyhow!("Bind for {ip}:{hf}-{hl} failed: every port is already allocated")
                })?;
                add(&mut taken, port, port, r.container.0)?
            }
            None => {
                for c in r.container.0..=r.container.1 {
                    let port = (EPHEMERAL_FIRST..=EPHEMERAL_LAST)
                        .find(|&p| !taken.any(r.proto, ip, p, p))
                        .ok_or_else(|| anyhow::anyhow!("no free host port left for {c}/{}", r.proto.name()))?;
                    add(&mut taken, port, port, c)?;
                }
            }
        }
    }
    Ok(out)
}

/// Refuses host addresses the host does not have, as Docker fails to bind
/// them (0.0.0.0, all addresses, is always fine). `host_addrs` are the
/// host namespace's IPv4 addresses.
pub fn check_host_addresses(published: &[Published], host_addrs: &[Ipv4Addr]) -> Result<()> {
    for m in published {
        if !m.host_ip.is_unspecified() && !host_addrs.contains(&m.host_ip) {
            bail!(
                "Error starting userland proxy: listen {}4 {}:{}: bind: cannot assign requested address",
                m.proto.name(),
                m.host_ip,
                m.host_first
            );
        }
    }
    Ok(())
}

fn key(m: &Published, port: u16) -> PublishedKey {
    PublishedKey { host_addr: m.host_ip.octets(), host_port: port, proto: m.proto.number(), _pad: 0 }
}

/// Writes `published` (leading to `target`) into the data path, taking
/// range slots as needed. All or nothing: on failure what was written is
/// removed again (removing what was never written is harmless, the keys are
/// ours), and a failure of that is reported too.
pub fn install(datapath: &Datapath, published: &mut [Published], target: Ipv4Addr) -> Result<()> {
    let Err(cause) = write(datapath, published, target) else { return Ok(()) };
    Err(match uninstall(datapath, published) {
        Ok(()) => cause,
        Err(rollback) => crate::teardown::RolledBackBadly { cause, rollback }.into(),
    })
}

fn write(datapath: &Datapath, mappings: &mut [Published], target: Ipv4Addr) -> Result<()> {
    datapath.set_published(mappings.iter().filter(|m| m.port_count() == 1).map(|m| {
        (key(m, m.host_first), PublishedTarget { addr: target.octets(), port: m.container_first, _pad: 0 })
    }))?;
    for m in mappings.iter_mut().filter(|m| m.port_count() > 1) {
        let slot = datapath
            .range_slots()?
            .iter()
            .position(|r| r.proto == 0)
            .ok_or_else(|| anyhow::anyhow!("all {MAX_PUBLISHED_RANGES} published range slots are in use"))?;
        datapath.set_range(
            slot as u32,
            PublishedRange {
                host_addr: m.host_ip.octets(),
                host_first: m.host_first,
                host_last: m.host_last,
                target_addr: target.octets(),
                target_first: m.container_first,
                proto: m.proto.number(),
                _pad: 0,
            },
        )?;
        m.range_slot = Some(slot as u32);
    }
    Ok(())
}

/// Removes published ports from the data path; every one is tried.
pub fn uninstall(datapath: &Datapath, published: &[Published]) -> Result<()> {
    let mut teardown = crate::teardown::Teardown::new();
    teardown.step(
        "published ports",
        datapath.remove_published(published.iter().filter(|m| m.range_slot.is_none()).map(|m| key(m, m.host_first))),
    );
    for slot in published.iter().filter_map(|m| m.range_slot) {
        teardown.step(format!("published range slot {slot}"), datapath.set_range(slot, PublishedRange::default()));
    }
    teardown.finish()
}

/// `docker port` lines: `80/tcp -> 0.0.0.0:32768`, or only the host side when
/// asked about one container port.
pub fn describe(published: &[Published], filter: Option<(u16, Proto)>) -> Vec<String> {
    let mut lines = Vec::new();
    for m in published {
        for i in 0..m.port_count() {
            let (c, h) = (m.container_first + i, m.host_first + i);
            match filter {
                Some((port, proto)) if port == c && proto == m.proto => lines.push(format!("{}:{h}", m.host_ip)),
                Some(_) => {}
                None => lines.push(format!("{c}/{} -> {}:{h}", m.proto.name(), m.host_ip)),
            }
        }
    }
    lines
}

/// Parses the `PORT[/PROTO]` argument of `port`.
pub fn parse_filter(text: &str) -> Result<(u16, Proto)> {
    let r = parse(text)?;
    if r.host.is_some() || r.host_ip.is_some() || r.container.0 != r.container.1 {
        bail!("invalid port {text:?}: PORT[/PROTO]");
    }
    Ok((r.container.0, r.proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_docker_form() {
        let p = parse("80").unwrap();
        assert_eq!((p.host_ip, p.host, p.container, p.proto), (None, None, (80, 80), Proto::Tcp));
        assert_eq!(parse("8080:80").unwrap().host, Some((8080, 8080)));
        let p = parse("127.0.0.1::80/udp").unwrap();
        assert_eq!((p.host_ip, p.host, p.proto), (Some(Ipv4Addr::LOCALHOST), None, Proto::Udp));
        let p = parse("10.0.0.1:8080:80").unwrap();
        assert_eq!((p.host_ip, p.host), (Some(Ipv4Addr::new(10, 0, 0, 1)), Some((8080, 8080))));
        assert_eq!(parse("9000-9009:9000-9009").unwrap().host, Some((9000, 9009)));
        assert_eq!(parse("9000-9009:80").unwrap().container, (80, 80));
        assert!(parse("9000-9009:80-81").is_err());
        assert!(parse("0").is_err());
        assert!(parse("80/sctp").is_err());
        assert!(parse("x:1:2").is_err());
    }

    #[test]
    fn allocation_follows_docker() {
        let none: [Published; 0] = [];
        let any = Ipv4Addr::UNSPECIFIED;
        let specs = [parse("80").unwrap(), parse("81").unwrap(), parse("9000-9009:80").unwrap()];
        let m = allocate(&none, &specs, any).unwrap();
        assert_eq!(m[0].host_first, EPHEMERAL_FIRST);
        assert_eq!(m[1].host_first, EPHEMERAL_FIRST + 1);
        assert_eq!((m[2].host_first, m[2].container_first), (9000, 80));
        assert!(allocate(&none, &[parse("8080:80").unwrap(), parse("8080:81").unwrap()], any).is_err());
        let bound = Ipv4Addr::new(198, 18, 0, 2);
        let with = allocate(&none, &[parse("198.18.0.2:7000:80").unwrap()], any).unwrap();
        assert_eq!(with[0].host_ip, bound);
        assert!(allocate(&with, &[parse("7000:80").unwrap()], any).is_err(), "all addresses vs one");
        assert!(allocate(&with, &[parse("198.18.0.2:7000:80").unwrap()], any).is_err());
        assert!(allocate(&with, &[parse("198.18.0.3:7000:80").unwrap()], any).is_ok(), "another address");
        assert!(allocate(&with, &[parse("7000:80/udp").unwrap()], any).is_ok(), "another protocol");
        assert!(allocate(&with, &[parse("6990-7010:80-100").unwrap()], any).is_err(), "a range over it");
        let lines = describe(&m[..1], None);
        assert_eq!(lines, vec!["80/tcp -> 0.0.0.0:32768".to_string()]);
        assert_eq!(describe(&m, Some((81, Proto::Tcp))), vec!["0.0.0.0:32769".to_string()]);
    }
}
