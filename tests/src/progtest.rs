//! The program-level rig: the real data-path object loaded and pinned as
//! the loader does it (`netpath::datapath::Datapath`, under a bpffs
//! directory of its own), its maps filled directly for a small fixed world,
//! and each program run on crafted frames with `BPF_PROG_TEST_RUN`. Nothing
//! is attached anywhere and no packet goes on any wire: the kernel runs the
//! program once on a socket buffer (or XDP buffer) built from the frame and
//! hands back the return code and the frame as the program left it.
//!
//! The programs decide by the interface a frame arrived on (`from_container`
//! looks its veth up in `VETHS`, the uplink programs theirs in `UPLINKS`),
//! and `BPF_PROG_TEST_RUN` takes that interface from the context
//! (`__sk_buff.ifindex`, `xdp_md.ingress_ifindex`) only if it exists in the
//! caller's network namespace. So the rig moves its thread into a private,
//! anonymous network namespace holding one veth pair per sandbox and one
//! for the uplink (the namespace and its devices vanish with the rig; the
//! thread goes back where it was), with forwarding on and the uplink's
//! address, so the programs' FIB lookups see a host like the real one.
use std::{
    cell::RefCell,
    collections::BTreeMap,
    fs::File,
    io::Write,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use aya_obj::programs::XdpAttachType;
use netpath::{
    datapath::{Datapath, LoadOptions},
    validate::format_mac,
};
use netpath_common::{
    CtEntry, DatapathConfig, Endpoint, EndpointKey, FlowKey, NetworkPolicy, Program, PublishedKey, PublishedRange,
    PublishedTarget, REASON_SLOTS, Reason, ReasonStats, Uplink, map_names, network_flags, program_names,
};
use nix::sched::{CloneFlags, setns, unshare};

use crate::craft::Mac;

pub const UPLINK: &str = "up0";
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The uplink's next hop.
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A client somewhere outside.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
pub const UPLINK_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const ROUTER_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// A veth with no endpoint behind it.
pub const STRAY_VETH: &str = "vx";
/// A network routed through the stray veth: an interface that is no uplink.
pub const BEYOND_STRAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);

/// A single published TCP port of every host address, to `b`.
pub const PUB_TCP: (u16, u16) = (8080, 80);
/// A single published UDP port, to `b`.
pub const PUB_UDP: (u16, u16) = (8081, 7000);
/// A published TCP range 9000-9009 → `a`:9100-9109.
pub const PUB_RANGE: (u16, u16, u16) = (9000, 9009, 9100);

#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub id: u32,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub flags: u32,
}

pub static NETS: [Net; 4] = [
    Net {
        id: 1,
        subnet: Ipv4Addr::new(10, 60, 0, 0),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 60, 0, 1),
        flags: network_flags::MASQUERADE,
    },
    Net {
        id: 2,
        subnet: Ipv4Addr::new(10, 61, 0, 0),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 61, 0, 1),
        flags: network_flags::MASQUERADE,
    },
    // ICC off.
    Net {
        id: 3,
        subnet: Ipv4Addr::new(10, 62, 0, 0),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 62, 0, 1),
        flags: network_flags::MASQUERADE | network_flags::NO_ICC,
    },
    // --internal.
    Net {
        id: 4,
        subnet: Ipv4Addr::new(10, 63, 0, 0),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 63, 0, 1),
        flags: network_flags::INTERNAL,
    },
];

#[derive(Clone, Copy, Debug)]
pub struct Sandbox {
    pub name: &'static str,
    pub ip: Ipv4Addr,
    pub net: u32,
    /// Its host-side veth in the rig's namespace.
    pub veth: &'static str,
}

pub static SANDBOXES: [Sandbox; 6] = [
    Sandbox { name: "a", ip: Ipv4Addr::new(10, 60, 0, 10), net: 1, veth: "va" },
    Sandbox { name: "b", ip: Ipv4Addr::new(10, 60, 0, 20), net: 1, veth: "vb" },
    Sandbox { name: "c", ip: Ipv4Addr::new(10, 61, 0, 10), net: 2, veth: "vc" },
    Sandbox { name: "d", ip: Ipv4Addr::new(10, 62, 0, 10), net: 3, veth: "vd" },
    Sandbox { name: "e", ip: Ipv4Addr::new(10, 62, 0, 20), net: 3, veth: "ve" },
    Sandbox { name: "i", ip: Ipv4Addr::new(10, 63, 0, 10), net: 4, veth: "vi" },
];

pub fn sandbox(name: &str) -> &'static Sandbox {
    SANDBOXES.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no sandbox {name} in the rig's world"))
}

pub fn net(id: u32) -> &'static Net {
    NETS.iter().find(|n| n.id == id).expect("a network of the world")
}

/// Docker's MAC for an address: 02:42 and the address.
pub fn mac_of(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The (made-up) MAC of a network's bridge.
pub fn gateway_mac(net: u32) -> Mac {
    [0x02, 0x42, 0xff, 0, 0, net as u8]
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// The attach points the rig can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    FromContainer,
    FromUplink,
    ToUplink,
    XdpFromUplink,
}

impl Hook {
    pub const ALL: [Hook; 4] = [Hook::FromContainer, Hook::FromUplink, Hook::ToUplink, Hook::XdpFromUplink];

    pub fn program(self) -> Program {
        match self {
            Hook::FromContainer => Program::FromContainer,
            Hook::FromUplink => Program::FromUplink,
            Hook::ToUplink => Program::ToUplink,
            Hook::XdpFromUplink => Program::XdpFromUplink,
        }
    }

    pub fn is_xdp(self) -> bool {
        self == Hook::XdpFromUplink
    }
}

/// What the kernel is told to do with the frame, whatever the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// TC_ACT_OK / XDP_PASS: on through the kernel.
    Pass,
    /// TC_ACT_SHOT / XDP_DROP.
    Drop,
    /// TC_ACT_REDIRECT / XDP_REDIRECT: handed to another interface.
    Redirect,
    /// Any other return code: never valid for netpath's programs.
    Other(u32),
}

impl Action {
    fn decode(hook: Hook, code: u32) -> Action {
        match (hook.is_xdp(), code) {
            (false, 0) | (true, 2) => Action::Pass,
            (false, 2) | (true, 1) => Action::Drop,
            (false, 7) | (true, 4) => Action::Redirect,
            (_, other) => Action::Other(other),
        }
    }
}

/// One frame through one program.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub hook: Hook,
    pub action: Action,
    /// The single reason the program counted, if it counted exactly one
    /// packet of the frame's length in exactly one slot.
    pub reason: Option<Reason>,
    /// Every slot of the program's that moved: (slot, packets, bytes).
    pub moved: Vec<(usize, u64, u64)>,
    /// The frame as the program left it.
    pub out: Vec<u8>,
    /// `skb->mark` as the program left it (TC; XDP: 0): what the sandbox's
    /// veth hands to the uplink's egress with a packet it routed there.
    pub mark: u32,
    /// The program's run time as the kernel measured it (one run).
    pub run_ns: u64,
    /// Conntrack entries that appeared (or changed) with this frame, when
    /// the run tracked them.
    pub ct_new: Vec<(FlowKey, CtEntry)>,
    /// Conntrack keys that went away with this frame.
    pub ct_gone: Vec<FlowKey>,
}

impl Outcome {
    /// The reason, or a panic naming what moved instead.
    pub fn why(&self) -> Reason {
        self.reason.unwrap_or_else(|| panic!("{:?} counted {:?} for one frame, not one reason", self.hook, self.moved))
    }

    /// `(reason name, action)`, for compact assertions.
    pub fn verdict(&self) -> (&'static str, Action) {
        (self.why().name(), self.action)
    }
}

/// Sizes fixed at load.
#[derive(Clone, Debug, Default)]
pub struct RigOptions {
    pub conntrack_max: Option<u32>,
    pub config: DatapathConfig,
}

pub struct Rig {
    pub dp: Datapath,
    progs: BTreeMap<Hook, Prog>,
    stats: PerCpuArray<MapData, ReasonStats>,
    /// CONNTRACK (confirmed connections) and CT_NEW (unconfirmed ones).
    ct: [HashMap<MapData, FlowKey, CtEntry>; 2],
    ifindex: BTreeMap<&'static str, u32>,
    home: File,
    /// The last readings of each hook's counters and of conntrack: only the
    /// rig's own runs change them, so each run reads them once, after.
    last_counters: RefCell<BTreeMap<Hook, Vec<ReasonStats>>>,
    last_ct: RefCell<Option<BTreeMap<Key, CtEntry>>>,
}

enum Prog {
    Tc(SchedClassifier),
    Xdp(Xdp),
}

impl Rig {
    pub fn new() -> Result<Rig> {
        Rig::with(RigOptions::default())
    }

    /// Builds the rig on the calling thread: it stays in the rig's private
    /// network namespace until the rig is dropped.
    pub fn with(options: RigOptions) -> Result<Rig> {
        let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        match Rig::build(options, &home) {
            Ok(rig) => Ok(rig),
            Err(e) => {
                let _ = setns(&home, CloneFlags::CLONE_NEWNET);
                Err(e)
            }
        }
    }

    fn build(options: RigOptions, home: &File) -> Result<Rig> {
        devices()?;
        let mut ifindex = BTreeMap::new();
        for name in SANDBOXES.iter().map(|s| s.veth).chain([STRAY_VETH, UPLINK]) {
            ifindex.insert(name, index_of(name)?);
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/netpath-progtest-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let dp = Datapath::at(&dir);
        let _ = dp.unload();
        let loaded = dp
            .ensure_loaded(&LoadOptions { conntrack_max: options.conntrack_max, config: options.config })
            .context("loading the data path object");
        if let Err(e) = loaded {
            let _ = dp.unload();
            return Err(e);
        }
        let rig = (|| -> Result<Rig> {
            let map =
                |name: &str| -> Result<Map> { Ok(Map::from_map_data(MapData::from_pin(dp.maps_dir().join(name))?)?) };
            let stats = PerCpuArray::try_from(map(map_names::STATS)?)?;
            let ct = [HashMap::try_from(map(map_names::CONNTRACK)?)?, HashMap::try_from(map(map_names::CT_NEW)?)?];
            let pin = |name: &str| dir.join("programs").join(name);
            let mut progs = BTreeMap::new();
            for (hook, name) in [
                (Hook::FromContainer, program_names::FROM_CONTAINER),
                (Hook::FromUplink, program_names::FROM_UPLINK),
                (Hook::ToUplink, program_names::TO_UPLINK),
            ] {
                progs.insert(hook, Prog::Tc(SchedClassifier::from_pin(pin(name))?));
            }
            let xdp = Xdp::from_pin(pin(program_names::XDP_FROM_UPLINK), XdpAttachType::Interface)?;
            progs.insert(Hook::XdpFromUplink, Prog::Xdp(xdp));
            let home = home.try_clone()?;
            Ok(Rig {
                dp: Datapath::at(&dir),
                progs,
                stats,
                ct,
                ifindex,
                home,
                last_counters: RefCell::default(),
                last_ct: RefCell::default(),
            })
        })();
        let rig = match rig {
            Ok(rig) => rig,
            Err(e) => {
                let _ = dp.unload();
                return Err(e);
            }
        };
        rig.fill_maps()?;
        Ok(rig)
    }

    /// The world, written the way the loader writes it.
    fn fill_maps(&self) -> Result<()> {
        for n in NETS {
            self.dp.set_network(
                n.id,
                NetworkPolicy {
                    flags: n.flags,
                    subnet: n.subnet.octets(),
                    subnet_mask: mask(n.prefix).octets(),
                    gateway: n.gateway.octets(),
                    snat_addr: [0; 4],
                    gateway_mac: gateway_mac(n.id),
                    _pad: [0; 2],
                },
            )?;
        }
        for s in SANDBOXES {
            let flags =
                if net(s.net).flags & network_flags::NO_ICC != 0 { netpath_common::endpoint_flags::NO_ICC } else { 0 };
            self.dp.set_endpoint(
                EndpointKey { ipv4: s.ip.octets() },
                Endpoint { host_ifindex: self.veth(s.name), network_id: s.net, mac: mac_of(s.ip), flags },
            )?;
        }
        let mut uplinks: HashMap<MapData, u32, Uplink> =
            HashMap::try_from(Map::from_map_data(MapData::from_pin(self.dp.maps_dir().join(map_names::UPLINKS))?)?)?;
        uplinks.insert(self.ifindex(UPLINK), Uplink { addr: UPLINK_IP.octets() }, 0)?;
        let b = sandbox("b").ip.octets();
        self.dp.set_published([
            (
                PublishedKey { host_addr: [0; 4], host_port: PUB_TCP.0, proto: crate::craft::TCP, _pad: 0 },
                PublishedTarget { addr: b, port: PUB_TCP.1, _pad: 0 },
            ),
            (
                PublishedKey { host_addr: [0; 4], host_port: PUB_UDP.0, proto: crate::craft::UDP, _pad: 0 },
                PublishedTarget { addr: b, port: PUB_UDP.1, _pad: 0 },
            ),
        ])?;
        self.dp.set_range(
            0,
            PublishedRange {
                host_addr: [0; 4],
                host_first: PUB_RANGE.0,
                host_last: PUB_RANGE.1,
                target_addr: sandbox("a").ip.octets(),
                target_first: PUB_RANGE.2,
                proto: crate::craft::TCP,
                _pad: 0,
            },
        )
    }

    /// The ifindex of a device of the rig's namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        *self.ifindex.get(dev).unwrap_or_else(|| panic!("no device {dev} in the rig"))
    }

    /// The host-side veth index of sandbox `name`.
    pub fn veth(&self, name: &str) -> u32 {
        self.ifindex(sandbox(name).veth)
    }

    /// Marks `name` as able to take XDP-redirected frames (the loader sets
    /// this when the uplink runs XDP).
    pub fn set_xdp_target(&self, name: &str, on: bool) -> Result<()> {
        let key = EndpointKey { ipv4: sandbox(name).ip.octets() };
        let mut ep = self.dp.endpoints()?.get(&key, 0)?;
        let bit = netpath_common::endpoint_flags::XDP_TARGET;
        ep.flags = if on { ep.flags | bit } else { ep.flags & !bit };
        self.dp.set_endpoint(key, ep)
    }

    /// What `hook`'s slots hold now, summed over CPUs.
    pub fn counters(&self, hook: Hook) -> Result<Vec<ReasonStats>> {
        self.program_counters(hook.program())
    }

    /// What `program`'s slots hold now, summed over CPUs.
    pub fn program_counters(&self, program: Program) -> Result<Vec<ReasonStats>> {
        let base = program as u32 * REASON_SLOTS as u32;
        (0..REASON_SLOTS as u32)
            .map(|i| {
                let per_cpu = self.stats.get(&(base + i), 0)?;
                Ok(per_cpu.iter().fold(ReasonStats::default(), |a, s| ReasonStats {
                    packets: a.packets + s.packets,
                    bytes: a.bytes + s.bytes,
                }))
            })
            .collect()
    }

    pub fn conntrack(&self) -> Result<BTreeMap<Key, CtEntry>> {
        // CONNTRACK only: what the assertions about confirmed and evicted
        // connections read. (CT_NEW is emptied with it by clear_conntrack.)
        let mut all = BTreeMap::new();
        for kv in self.ct[0].iter() {
            let (k, v) = kv?;
            all.insert(Key(k), v);
        }
        Ok(all)
    }

    /// The unconfirmed connections (CT_NEW): opened, not yet confirmed by
    /// the originator's second packet.
    pub fn unconfirmed(&self) -> Result<BTreeMap<Key, CtEntry>> {
        let mut all = BTreeMap::new();
        for kv in self.ct[1].iter() {
            let (k, v) = kv?;
            all.insert(Key(k), v);
        }
        Ok(all)
    }

    /// Empties both conntrack tables.
    pub fn clear_conntrack(&mut self) -> Result<()> {
        self.last_ct.replace(None);
        for table in &mut self.ct {
            let keys: Vec<FlowKey> = table.keys().collect::<Result<_, _>>()?;
            for k in keys {
                match table.remove(&k) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Runs `frame` through `hook` as if it arrived on (TC egress: left
    /// through) interface `ifindex`; conntrack changes are recorded.
    pub fn run(&self, hook: Hook, ifindex: u32, frame: &[u8]) -> Result<Outcome> {
        self.run_with(hook, ifindex, frame, true)
    }

    /// `run`, optionally without the conntrack snapshots (for floods).
    pub fn run_with(&self, hook: Hook, ifindex: u32, frame: &[u8], track_ct: bool) -> Result<Outcome> {
        self.run_full(hook, ifindex, frame, 0, track_ct)
    }

    /// `run_with` on a socket buffer that carries `mark` (TC only: what an
    /// earlier hook handed over with the packet).
    pub fn run_full(&self, hook: Hook, ifindex: u32, frame: &[u8], mark: u32, track_ct: bool) -> Result<Outcome> {
        let ct_before = match (track_ct, self.last_ct.take()) {
            (false, _) => None,
            (true, Some(last)) => Some(last),
            (true, None) => Some(self.conntrack()?),
        };
        let cached = self.last_counters.borrow_mut().remove(&hook);
        let before = match cached {
            Some(c) => c,
            None => self.counters(hook)?,
        };
        let mut out = vec![0u8; frame.len() + 256];
        let mut ctx_out = [0u8; 192];
        let result = match &self.progs[&hook] {
            Prog::Tc(p) => {
                // struct __sk_buff: mark at 8, ingress_ifindex at 36, ifindex
                // at 40; the kernel takes the device from ifindex (> 1) in
                // the caller's namespace and accepts these fields (the rest
                // must be zero), and gives the mark back in ctx_out.
                let mut ctx = [0u8; 192];
                ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
                ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
                ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ctx_out: Some(&mut ctx_out),
                    ..TestRunOptions::new()
                })
            }
            Prog::Xdp(p) => {
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
                // rx_queue_index, egress_ifindex.
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::new()
                })
            }
        }
        .with_context(|| format!("BPF_PROG_TEST_RUN of {hook:?} on a {}-byte frame", frame.len()))?;
        out.truncate(result.data_size_out as usize);
        let mark_out = if hook.is_xdp() { 0 } else { u32::from_ne_bytes(ctx_out[8..12].try_into().expect("4 bytes")) };
        let after = self.counters(hook)?;
        let moved: Vec<(usize, u64, u64)> = after
            .iter()
            .zip(&before)
            .enumerate()
            .filter(|(_, (a, b))| a.packets != b.packets || a.bytes != b.bytes)
            .map(|(i, (a, b))| (i, a.packets - b.packets, a.bytes - b.bytes))
            .collect();
        let reason = match moved.as_slice() {
            [(slot, 1, bytes)] if *bytes == frame.len() as u64 => {
                Reason::ALL.iter().copied().find(|r| *r as usize == *slot)
            }
            _ => None,
        };
        let (ct_new, ct_gone) = match ct_before {
            Some(before) => {
                let after = self.conntrack()?;
                let new = after
                    .iter()
                    .filter(|(k, v)| before.get(k).is_none_or(|old| !same_entry(old, v)))
                    .map(|(k, v)| (k.0, *v))
                    .collect();
                let gone = before.keys().filter(|k| !after.contains_key(k)).map(|k| k.0).collect();
                self.last_ct.replace(Some(after));
                (new, gone)
            }
            None => (Vec::new(), Vec::new()),
        };
        self.last_counters.borrow_mut().insert(hook, after);
        Ok(Outcome {
            hook,
            action: Action::decode(hook, result.return_value),
            reason,
            moved,
            out,
            mark: mark_out,
            run_ns: result.duration.as_nanos() as u64,
            ct_new,
            ct_gone,
        })
    }

    /// A frame a sandbox sends, seen on its veth.
    pub fn from_container(&self, name: &str, frame: &[u8]) -> Outcome {
        self.run(Hook::FromContainer, self.veth(name), frame).expect("test run")
    }

    /// A frame arriving from the outside on the uplink (TC).
    pub fn from_uplink(&self, frame: &[u8]) -> Outcome {
        self.run(Hook::FromUplink, self.ifindex(UPLINK), frame).expect("test run")
    }

    /// A frame arriving from the outside on the uplink (XDP).
    pub fn xdp_from_uplink(&self, frame: &[u8]) -> Outcome {
        self.run(Hook::XdpFromUplink, self.ifindex(UPLINK), frame).expect("test run")
    }

    /// A frame the kernel routed out of the uplink.
    pub fn to_uplink(&self, frame: &[u8]) -> Outcome {
        self.run(Hook::ToUplink, self.ifindex(UPLINK), frame).expect("test run")
    }

    /// A frame the sandbox's veth redirected out of the uplink, with the
    /// mark it left on the socket buffer (which the redirect keeps).
    pub fn to_uplink_marked(&self, frame: &[u8], mark: u32) -> Outcome {
        self.run_full(Hook::ToUplink, self.ifindex(UPLINK), frame, mark, true).expect("test run")
    }

    /// What a sandbox sends towards the outside, all the way: its veth,
    /// then the uplink's egress, when the veth's program redirected it
    /// there itself (`REDIRECT_UPLINK`: forwarded and translated as it left
    /// it, with the mark it left) or passed it to the kernel, which routes
    /// it out. The second outcome is absent when the first went neither way.
    pub fn sandbox_to_outside(&self, name: &str, frame: &[u8]) -> (Outcome, Option<Outcome>) {
        let first = self.from_container(name, frame);
        if first.action == Action::Redirect && first.reason == Some(Reason::RedirectUplink) {
            let second = self.to_uplink_marked(&first.out, first.mark);
            return (first, Some(second));
        }
        if first.action != Action::Pass {
            return (first, None);
        }
        let mut routed = first.out.clone();
        // The kernel's forwarding: new MACs, one hop of TTL (checksum
        // adjusted as ip_decrease_ttl does).
        routed[0..6].copy_from_slice(&ROUTER_MAC);
        routed[6..12].copy_from_slice(&UPLINK_MAC);
        if routed.len() >= 34 && routed[22] > 1 {
            routed[22] -= 1;
            let ihl = usize::from(routed[14] & 0x0f) * 4;
            if routed.len() >= 14 + ihl {
                routed[24..26].copy_from_slice(&[0, 0]);
                let c = crate::craft::checksum(&[&routed[14..14 + ihl]]);
                routed[24..26].copy_from_slice(&c.to_be_bytes());
            }
        }
        let second = self.to_uplink(&routed);
        (first, Some(second))
    }
}

/// Two entries are the same connection state, ignoring when they were last
/// seen (a refresh is not a new entry).
fn same_entry(a: &CtEntry, b: &CtEntry) -> bool {
    a.rewrite == b.rewrite && a.pair == b.pair && a.flags == b.flags
}

/// A conntrack key, ordered for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(pub FlowKey);

impl Key {
    fn tuple(&self) -> ([u8; 4], [u8; 4], u16, u16, u8) {
        (self.0.saddr, self.0.daddr, self.0.sport, self.0.dport, self.0.proto)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Err(e) = self.dp.unload() {
            eprintln!("progtest: removing pins under {}: {e:#}", self.dp.dir().display());
        }
        // Back to where the thread was; the private namespace and its
        // devices go with the last reference to them.
        if let Err(e) = setns(&self.home, CloneFlags::CLONE_NEWNET) {
            eprintln!("progtest: returning to the thread's network namespace: {e}");
        }
    }
}

/// The rig's devices, created in the (new, private) namespace of this
/// thread: a child started from it starts there too.
fn devices() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("forwarding on in the rig's namespace")?;
    let mut script = String::from("link set lo up\n");
    for dev in SANDBOXES.iter().map(|s| s.veth).chain([STRAY_VETH, UPLINK]) {
        script += &format!("link add {dev} type veth peer name {dev}-p\nlink set {dev} up\nlink set {dev}-p up\n");
    }
    // The uplink's MAC and its router's, known: from_container's FIB
    // lookup then finds the next hop's neighbour and writes both MACs.
    let mac = |m: Mac| format_mac(&m);
    script += &format!(
        "link set {UPLINK} address {}\naddr add {UPLINK_IP}/24 dev {UPLINK}\nroute add default via {ROUTER_IP} dev {UPLINK}\n\
         neigh add {ROUTER_IP} lladdr {} dev {UPLINK} nud permanent\n\
         route add {BEYOND_STRAY}/24 dev {STRAY_VETH}\n",
        mac(UPLINK_MAC),
        mac(ROUTER_MAC)
    );
    // The gateways are addresses of the host (of its bridges, on a real one).
    for n in &NETS {
        script += &format!("addr add {}/32 dev lo\n", n.gateway);
    }
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ip")?;
    child.stdin.take().context("ip's stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "ip -batch: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn index_of(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: plain libc call on a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no device {name} in the rig's namespace");
    }
    Ok(i)
}
