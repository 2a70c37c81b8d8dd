//! The eBPF side as the loader sees it: one object, loaded once per instance
//! and pinned (programs, maps, and one TCX link per attachment) under the
//! instance's bpffs directory, so the data path outlives every `netpath`
//! process and later invocations only open pins.
//!
//! Layout: `<bpf>/programs/<program>`, `<bpf>/maps/<MAP>`,
//! `<bpf>/links/<ifname>@<program>` (bpffs names may not contain dots).
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrAttachType, links::FdLink, tc,
    },
};
use netpath_common::{
    Counters, CtEntry, DatapathConfig, Endpoint, EndpointKey, FlowKey, LinkKey, NetworkPolicy, Program, PublishedKey,
    PublishedRange, PublishedTarget, REASON_SLOTS, ReasonStats, Uplink, VethKey, map_names, program_names,
};

use aya_obj::programs::XdpAttachType;

use crate::config::UplinkXdp;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Identifies the embedded object, to tell whether the pinned one is it.
pub fn object_digest() -> String {
    use sha2::Digest;
    sha2::Sha256::digest(OBJECT).iter().map(|b| format!("{b:02x}")).collect()
}

/// The TC programs and where each attaches.
const TC_PROGRAMS: &[(&str, TcAttachType)] = &[
    (program_names::FROM_CONTAINER, TcAttachType::Ingress),
    (program_names::FROM_UPLINK, TcAttachType::Ingress),
    (program_names::TO_UPLINK, TcAttachType::Egress),
];

/// The socket programs and their cgroup hooks.
const SOCK_PROGRAMS: &[(&str, CgroupSockAddrAttachType)] = &[
    (program_names::SOCK_CONNECT4, CgroupSockAddrAttachType::Connect4),
    (program_names::SOCK_SENDMSG4, CgroupSockAddrAttachType::UDPSendMsg4),
    (program_names::SOCK_RECVMSG4, CgroupSockAddrAttachType::UDPRecvMsg4),
];

/// Sizes and timeouts fixed when the data path is loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub conntrack_max: Option<u32>,
    pub config: DatapathConfig,
}

pub struct Datapath {
    dir: PathBuf,
}

impl Datapath {
    /// The data path pinned at `dir`, without loading anything.
    pub fn at(dir: &Path) -> Self {
        Datapath { dir: dir.to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    fn program_pin(&self, name: &str) -> PathBuf {
        self.dir.join("programs").join(name)
    }

    fn link_pin(&self, ifname: &str, program: &str) -> PathBuf {
        self.dir.join("links").join(format!("{ifname}@{program}"))
    }

    pub fn is_loaded(&self) -> bool {
        let mut names = TC_PROGRAMS.iter().map(|(n, _)| n).chain(SOCK_PROGRAMS.iter().map(|(n, _)| n));
        names.all(|name| self.program_pin(name).exists()) && self.program_pin(program_names::XDP_FROM_UPLINK).exists()
    }

    /// bpffs holds no regular files: the object's digest is the name of an
    /// empty directory next to the pins.
    fn object_stamp(&self) -> PathBuf {
        self.dir.join(format!("object-{}", &object_digest()[..16]))
    }

    /// Loads and pins the object unless an earlier run already did.
    pub fn ensure_loaded(&self, options: &LoadOptions) -> Result<()> {
        if self.is_loaded() {
            // Replacing programs in place while keeping maps and conntrack is
            // the upgrade path to come; until then, say so rather than run a
            // data path older than the binary without a word.
            if !self.object_stamp().exists() {
                eprintln!(
                    "warning: the data path pinned at {} comes from another netpath build; \
                     `netpath system reset` loads this one",
                    self.dir.display()
                );
            }
            return Ok(());
        }
        ensure_bpffs(&self.dir)?;
        let result = self.load(options);
        if result.is_err() {
            let _ = self.unload();
        }
        result
    }

    fn load(&self, options: &LoadOptions) -> Result<()> {
        for sub in ["programs", "maps", "links"] {
            let d = self.dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut loader = EbpfLoader::new();
        if let Some(max) = options.conntrack_max {
            loader.map_max_entries(map_names::CONNTRACK, max);
        }
        let mut ebpf = loader.load(OBJECT).context("loading the eBPF object")?;
        for name in map_names::ALL {
            let map = ebpf.map(name).with_context(|| format!("object lacks map {name}"))?;
            map.pin(self.maps_dir().join(name)).with_context(|| format!("pinning map {name}"))?;
        }
        for (name, _) in TC_PROGRAMS {
            let prog: &mut SchedClassifier =
                ebpf.program_mut(name).with_context(|| format!("object lacks program {name}"))?.try_into()?;
            prog.load().with_context(|| format!("verifier rejected {name}"))?;
            prog.pin(self.program_pin(name)).with_context(|| format!("pinning {name}"))?;
        }
        for (name, _) in SOCK_PROGRAMS {
            let prog: &mut CgroupSockAddr =
                ebpf.program_mut(name).with_context(|| format!("object lacks program {name}"))?.try_into()?;
            prog.load().with_context(|| format!("verifier rejected {name}"))?;
            prog.pin(self.program_pin(name)).with_context(|| format!("pinning {name}"))?;
        }
        let name = program_names::XDP_FROM_UPLINK;
        let prog: &mut Xdp =
            ebpf.program_mut(name).with_context(|| format!("object lacks program {name}"))?.try_into()?;
        prog.load().with_context(|| format!("verifier rejected {name}"))?;
        prog.pin(self.program_pin(name)).with_context(|| format!("pinning {name}"))?;
        self.set_config(&options.config)?;
        fs::create_dir(self.object_stamp()).context("stamping the pinned object")
    }

    /// Removes every pin: programs, maps and links. Links detach as their
    /// last reference goes.
    pub fn unload(&self) -> Result<()> {
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).with_context(|| format!("removing pins under {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// Attaches `program` to `ifname` and pins the link.
    fn attach(&self, program: &str, ifname: &str) -> Result<()> {
        let (_, hook) = TC_PROGRAMS.iter().find(|(n, _)| *n == program).context("unknown program")?;
        let mut prog = SchedClassifier::from_pin(self.program_pin(program))
            .with_context(|| format!("opening pinned {program}"))?;
        let id = match prog.attach(ifname, *hook) {
            Ok(id) => id,
            // Kernels before TCX need a clsact qdisc for the netlink attach.
            Err(_) => {
                let _ = tc::qdisc_add_clsact(ifname);
                prog.attach(ifname, *hook).with_context(|| format!("attaching {program} to {ifname}"))?
            }
        };
        let link = prog.take_link(id)?;
        // A netlink (pre-TCX) filter is not a pinnable link: it stays on the
        // interface when the process exits and goes away with the interface.
        if let Ok(fd_link) = FdLink::try_from(link) {
            fd_link
                .pin(self.link_pin(ifname, program))
                .with_context(|| format!("pinning the {program} link of {ifname}"))?;
        }
        Ok(())
    }

    fn detach(&self, program: &str, ifname: &str) -> Result<()> {
        let pin = self.link_pin(ifname, program);
        match fs::remove_file(&pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", pin.display())),
        }
    }

    /// Sandbox side: TC ingress of a sandbox's host-side veth.
    pub fn attach_sandbox(&self, host_ifname: &str) -> Result<()> {
        self.attach(program_names::FROM_CONTAINER, host_ifname)
    }

    pub fn detach_sandbox(&self, host_ifname: &str) -> Result<()> {
        self.detach(program_names::FROM_CONTAINER, host_ifname)
    }

    pub fn is_uplink_attached(&self, ifname: &str) -> bool {
        [program_names::FROM_UPLINK, program_names::TO_UPLINK].iter().all(|p| self.link_pin(ifname, p).exists())
    }

    /// Uplink side: TC ingress and egress of an interface to the outside,
    /// and XDP in front of TC ingress unless `xdp` is off (an attached XDP
    /// program is removed then). A mode change takes effect on a new uplink.
    pub fn attach_uplink(&self, ifname: &str, ifindex: u32, addr: Ipv4Addr, xdp: UplinkXdp) -> Result<()> {
        for program in [program_names::FROM_UPLINK, program_names::TO_UPLINK] {
            if !self.link_pin(ifname, program).exists() {
                self.attach(program, ifname)?;
            }
        }
        let xdp_pin = self.link_pin(ifname, program_names::XDP_FROM_UPLINK);
        match xdp {
            UplinkXdp::Off => self.detach_uplink_xdp(ifname)?,
            _ if xdp_pin.exists() => {}
            mode => self.attach_xdp(ifname, mode, &xdp_pin)?,
        }
        let mut uplinks: HashMap<MapData, u32, Uplink> = HashMap::try_from(self.map(map_names::UPLINKS)?)?;
        uplinks.insert(ifindex, Uplink { addr: addr.octets() }, 0).context("writing uplink")
    }

    /// Takes the XDP program off an uplink; TC handles everything again.
    pub fn detach_uplink_xdp(&self, ifname: &str) -> Result<()> {
        self.detach(program_names::XDP_FROM_UPLINK, ifname)
    }

    fn attach_xdp(&self, ifname: &str, mode: UplinkXdp, pin: &Path) -> Result<()> {
        let name = program_names::XDP_FROM_UPLINK;
        let mut prog = Xdp::from_pin(self.program_pin(name), XdpAttachType::Interface)
            .with_context(|| format!("opening pinned {name}"))?;
        let id = match mode {
            UplinkXdp::Native => prog.attach(ifname, XdpMode::Driver),
            UplinkXdp::Generic => prog.attach(ifname, XdpMode::Skb),
            _ => prog.attach(ifname, XdpMode::Driver).or_else(|_| prog.attach(ifname, XdpMode::Skb)),
        }
        .with_context(|| format!("attaching {name} to {ifname} ({mode:?})"))?;
        let link: FdLink = prog.take_link(id)?.try_into().context("XDP link")?;
        link.pin(pin).with_context(|| format!("pinning the {name} link of {ifname}"))?;
        Ok(())
    }

    /// Attaches the socket programs to `cgroup` (once) and tells them which
    /// network namespace is the host's.
    pub fn attach_sockets(&self, cgroup: &Path, host_netns_cookie: u64) -> Result<()> {
        for (name, hook) in SOCK_PROGRAMS {
            let pin = self.link_pin("cgroup", name);
            if pin.exists() {
                continue;
            }
            let mut prog = CgroupSockAddr::from_pin(self.program_pin(name), *hook)
                .with_context(|| format!("opening pinned {name}"))?;
            let dir = fs::File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
            let link: FdLink = prog.take_link(id)?.try_into().context("socket program link")?;
            link.pin(&pin).with_context(|| format!("pinning the {name} link"))?;
        }
        let mut config = self.config()?;
        if config.host_netns_cookie != host_netns_cookie {
            config.host_netns_cookie = host_netns_cookie;
            self.set_config(&config)?;
        }
        Ok(())
    }

    /// Replaces the set of host addresses the socket programs recognise.
    pub fn set_host_addresses(&self, addrs: &[Ipv4Addr]) -> Result<()> {
        let mut map: HashMap<MapData, [u8; 4], u8> = HashMap::try_from(self.map(map_names::HOST_ADDRS)?)?;
        let stale: Vec<[u8; 4]> =
            map.keys().filter_map(|k| k.ok()).filter(|k| !addrs.iter().any(|a| a.octets() == *k)).collect();
        for k in stale {
            ignore_missing(map.remove(&k))?;
        }
        for a in addrs {
            map.insert(a.octets(), 1, 0)?;
        }
        Ok(())
    }

    fn map(&self, name: &str) -> Result<Map> {
        let pin = self.maps_dir().join(name);
        let data = MapData::from_pin(&pin).with_context(|| format!("opening pinned map {}", pin.display()))?;
        Ok(Map::from_map_data(data)?)
    }

    pub fn endpoints(&self) -> Result<HashMap<MapData, EndpointKey, Endpoint>> {
        Ok(HashMap::try_from(self.map(map_names::ENDPOINTS)?)?)
    }

    fn veths(&self) -> Result<HashMap<MapData, VethKey, EndpointKey>> {
        Ok(HashMap::try_from(self.map(map_names::VETHS)?)?)
    }

    /// Writes the endpoint and which host veth it sits behind (the data path
    /// checks every frame of that veth against the endpoint's address and MAC).
    pub fn set_endpoint(&self, key: EndpointKey, endpoint: Endpoint) -> Result<()> {
        self.endpoints()?.insert(key, endpoint, 0).context("writing endpoint")?;
        self.veths()?.insert(VethKey { host_ifindex: endpoint.host_ifindex }, key, 0).context("writing veth")
    }

    pub fn remove_endpoint(&self, key: EndpointKey) -> Result<()> {
        let mut endpoints = self.endpoints()?;
        let veth = endpoints.get(&key, 0).ok().map(|ep| VethKey { host_ifindex: ep.host_ifindex });
        let results = [
            ignore_missing(endpoints.remove(&key)).context("removing endpoint"),
            match veth {
                // Only if the veth still names this endpoint (an ifindex may
                // have been reused by a newer sandbox).
                Some(v) => match self.veths()?.get(&v, 0) {
                    Ok(k) if k == key => ignore_missing(self.veths()?.remove(&v)).context("removing veth"),
                    _ => Ok(()),
                },
                None => Ok(()),
            },
        ];
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    pub fn set_network(&self, index: u32, policy: NetworkPolicy) -> Result<()> {
        let mut map: HashMap<MapData, u32, NetworkPolicy> = HashMap::try_from(self.map(map_names::NETWORKS)?)?;
        map.insert(index, policy, 0).context("writing network policy")
    }

    pub fn remove_network(&self, index: u32) -> Result<()> {
        let mut map: HashMap<MapData, u32, NetworkPolicy> = HashMap::try_from(self.map(map_names::NETWORKS)?)?;
        ignore_missing(map.remove(&index)).context("removing network policy")
    }

    fn links(&self) -> Result<HashMap<MapData, LinkKey, u8>> {
        Ok(HashMap::try_from(self.map(map_names::LINKS)?)?)
    }

    /// Allows (or stops allowing) traffic between two addresses on a network
    /// without ICC, both ways.
    pub fn set_link(&self, a: Ipv4Addr, b: Ipv4Addr, allow: bool) -> Result<()> {
        let mut links = self.links()?;
        for key in [LinkKey { from: a.octets(), to: b.octets() }, LinkKey { from: b.octets(), to: a.octets() }] {
            if allow {
                links.insert(key, 1, 0)?;
            } else {
                ignore_missing(links.remove(&key))?;
            }
        }
        Ok(())
    }

    /// Forgets every link involving `addrs`.
    pub fn remove_links_of(&self, addrs: &[Ipv4Addr]) -> Result<()> {
        let mut links = self.links()?;
        let octets: Vec<[u8; 4]> = addrs.iter().map(|a| a.octets()).collect();
        let doomed: Vec<LinkKey> = links
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| octets.contains(&k.from) || octets.contains(&k.to))
            .collect();
        for k in doomed {
            ignore_missing(links.remove(&k))?;
        }
        Ok(())
    }

    pub fn published(&self) -> Result<HashMap<MapData, PublishedKey, PublishedTarget>> {
        Ok(HashMap::try_from(self.map(map_names::PUBLISHED)?)?)
    }

    /// Writes published ports, opening the map once for all of them.
    pub fn set_published(&self, entries: impl IntoIterator<Item = (PublishedKey, PublishedTarget)>) -> Result<()> {
        let mut map = self.published()?;
        for (key, target) in entries {
            map.insert(key, target, 0).context("writing published port")?;
        }
        Ok(())
    }

    pub fn remove_published(&self, keys: impl IntoIterator<Item = PublishedKey>) -> Result<()> {
        let mut map = self.published()?;
        for key in keys {
            ignore_missing(map.remove(&key)).context("removing published port")?;
        }
        Ok(())
    }

    fn ranges(&self) -> Result<Array<MapData, PublishedRange>> {
        Ok(Array::try_from(self.map(map_names::PUBLISHED_RANGES)?)?)
    }

    /// Writes range slot `slot` (a zero `proto` frees it) and keeps the
    /// program's search bound at the highest used slot.
    pub fn set_range(&self, slot: u32, range: PublishedRange) -> Result<()> {
        let mut ranges = self.ranges()?;
        ranges.set(slot, range, 0).context("writing port range")?;
        let mut used = 0;
        for i in 0..ranges.len() {
            if ranges.get(&i, 0)?.proto != 0 {
                used = i + 1;
            }
        }
        let mut config = self.config()?;
        config.published_range_count = used;
        self.set_config(&config)
    }

    pub fn range_slots(&self) -> Result<Vec<PublishedRange>> {
        let ranges = self.ranges()?;
        (0..ranges.len()).map(|i| Ok(ranges.get(&i, 0)?)).collect()
    }

    pub fn config(&self) -> Result<DatapathConfig> {
        let map: Array<MapData, DatapathConfig> = Array::try_from(self.map(map_names::CONFIG)?)?;
        Ok(map.get(&0, 0)?)
    }

    pub fn set_config(&self, config: &DatapathConfig) -> Result<()> {
        let mut map: Array<MapData, DatapathConfig> = Array::try_from(self.map(map_names::CONFIG)?)?;
        map.set(0, *config, 0).context("writing data path config")
    }

    pub fn conntrack(&self) -> Result<HashMap<MapData, FlowKey, CtEntry>> {
        Ok(HashMap::try_from(self.map(map_names::CONNTRACK)?)?)
    }

    /// Every tracked connection direction.
    pub fn conntrack_entries(&self) -> Result<Vec<(FlowKey, CtEntry)>> {
        let ct = self.conntrack()?;
        let entries = ct.iter().filter_map(|r| r.ok()).collect();
        Ok(entries)
    }

    /// Deletes the entries `doomed` selects; returns how many went.
    pub fn remove_conntrack(&self, doomed: impl Fn(&FlowKey, &CtEntry) -> bool) -> Result<usize> {
        let mut ct = self.conntrack()?;
        let keys: Vec<FlowKey> =
            ct.iter().filter_map(|r| r.ok()).filter(|(k, e)| doomed(k, e)).map(|(k, _)| k).collect();
        for k in &keys {
            ignore_missing(ct.remove(k))?;
        }
        Ok(keys.len())
    }

    /// What `program` counted per verdict reason, summed over CPUs.
    pub fn counters(&self, program: Program) -> Result<Counters> {
        let stats: PerCpuArray<MapData, ReasonStats> = PerCpuArray::try_from(self.map(map_names::STATS)?)?;
        let mut total = Counters::default();
        for slot in 0..REASON_SLOTS {
            let index = program as u32 * REASON_SLOTS as u32 + slot as u32;
            let per_cpu = stats.get(&index, 0).context("reading STATS")?;
            for s in per_cpu.iter() {
                total.add_slot(slot, s);
            }
        }
        Ok(total)
    }
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mounts bpffs on /sys/fs/bpf when `dir` would otherwise not be on one.
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    if on_bpffs(probe)? {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        bail!("{} is not on a bpf filesystem", dir.display());
    }
    nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .context("mounting bpffs on /sys/fs/bpf")?;
    Ok(())
}

fn on_bpffs(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(st.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}
