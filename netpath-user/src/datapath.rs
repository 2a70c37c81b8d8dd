//! The eBPF side as the loader sees it: one object, loaded once per instance
//! and pinned (programs, maps, and one TCX link per attachment) under the
//! instance's bpffs directory, so the data path outlives every `netpath`
//! process and later invocations only open pins.
//!
//! Layout: `<bpf>/programs/<program>`, `<bpf>/maps/<MAP>`,
//! `<bpf>/links/<ifname>@<program>` (bpffs names may not contain dots), and
//! two markers (empty directories: bpffs holds no regular files):
//! `<bpf>/object-<digest>` names the build whose programs are attached,
//! `<bpf>/layout-<N>` the map layout ([`map_layout::VERSION`]) of the maps.
//!
//! Upgrade in place: a build whose object differs loads its programs over the
//! pinned maps (so conntrack, endpoints, counters stay), then swaps each
//! pinned link to its new program with `BPF_LINK_UPDATE`, which the kernel
//! does atomically per hook: no packet sees no program, and every packet
//! sees the same maps.
use std::{
    fs,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapInfo, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramInfo, SchedClassifier, TcAttachType, Xdp, XdpMode,
        cgroup_sock_addr::CgroupSockAddrAttachType,
        links::{FdLink, PinnedLink},
        tc,
    },
};
use netpath_common::{
    Counters, CtEntry, DatapathConfig, Endpoint, EndpointKey, FlowKey, LinkKey, NetworkPolicy, OverlayNetwork, Program,
    PublishedKey, PublishedRange, PublishedTarget, REASON_SLOTS, ReasonStats, RemoteEndpoint, RemoteEndpointKey,
    Uplink, VethKey, VniKey, map_layout, map_names, program_names,
};

use aya_obj::programs::XdpAttachType;

use crate::{config::UplinkXdp, teardown::Teardown};

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
    (program_names::FROM_OVERLAY, TcAttachType::Ingress),
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

/// Entries of the confirmed and the new-connection tables for
/// `conntrack-max` connections (the default when `None`): conntrack-max
/// counts connections, as Linux's does, two entries each, plus the room an
/// LRU map needs per CPU.
pub fn conntrack_capacity(conntrack_max: Option<u32>) -> (u32, u32) {
    let max = conntrack_max.unwrap_or(netpath_common::DEFAULT_CONNTRACK_MAX);
    let cpus = aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1);
    (netpath_common::conntrack_entries(max, cpus), netpath_common::ct_new_entries(max, cpus))
}

#[derive(Clone, Debug)]
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
        all_programs().all(|name| self.program_pin(name).exists())
    }

    /// bpffs holds no regular files: the object's digest is the name of an
    /// empty directory next to the pins.
    fn object_stamp(&self) -> PathBuf {
        self.dir.join(format!("object-{}", &object_digest()[..16]))
    }

    fn layout_marker(&self, version: u32) -> PathBuf {
        self.dir.join(format!("layout-{version}"))
    }

    /// Whether the programs attached are this build's.
    pub fn is_current(&self) -> bool {
        self.object_stamp().exists()
    }

    /// Loads and pins the object unless an earlier run already did; a data
    /// path pinned by another build is upgraded in place (see [`Self::upgrade`]).
    pub fn ensure_loaded(&self, options: &LoadOptions) -> Result<()> {
        if self.is_loaded() {
            if !self.is_current() {
                let done = self.upgrade()?;
                eprintln!("netpath: {done}");
            } else if !self.layout_marker(map_layout::VERSION).exists() {
                // The same object loaded by a build from before versioning:
                // its maps are this build's by definition.
                fs::create_dir(self.layout_marker(map_layout::VERSION)).context("marking the map layout")?;
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
        let mut ebpf = self.load_object(options.conntrack_max)?;
        load_programs(&mut ebpf)?;
        for name in all_programs() {
            program_mut(&mut ebpf, name)?.pin(self.program_pin(name)).with_context(|| format!("pinning {name}"))?;
        }
        self.set_config(&options.config)?;
        fs::create_dir(self.layout_marker(map_layout::VERSION)).context("marking the map layout")?;
        fs::create_dir(self.object_stamp()).context("stamping the pinned object")
    }

    /// Opens the embedded object with every map taken from its pin, or
    /// created and pinned where there is none yet; nothing is verified yet.
    fn load_object(&self, conntrack_max: Option<u32>) -> Result<Ebpf> {
        let mut loader = EbpfLoader::new();
        // Sizes apply to maps created now; pinned ones keep theirs.
        let (confirmed, new) = conntrack_capacity(conntrack_max);
        loader.map_max_entries(map_names::CONNTRACK, confirmed);
        loader.map_max_entries(map_names::CT_NEW, new);
        for m in map_layout::ALL {
            loader.map_pin_path(m.name, self.maps_dir().join(m.name));
        }
        loader.load(OBJECT).context("loading the eBPF object")
    }

    /// The map layout version the pins carry; `None` for pins from before
    /// versioning.
    pub fn pinned_layout(&self) -> Result<Option<u32>> {
        let mut found = None;
        for entry in fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))? {
            let name = entry?.file_name();
            let Some(v) = name.to_str().and_then(|n| n.strip_prefix("layout-")) else { continue };
            let v: u32 = v.parse().with_context(|| format!("unreadable layout marker {name:?}"))?;
            if found.is_some_and(|f| f != v) {
                bail!("the data path pinned at {} carries two layout markers", self.dir.display());
            }
            found = Some(v);
        }
        Ok(found)
    }

    /// Checks the pinned maps against this build's layout: the same version,
    /// and (as a net for a forgotten version bump) the same key and value
    /// sizes. Returns the maps this build has and the pins lack, which the
    /// upgrade creates and fills. Refuses, in one line naming the way out,
    /// what it cannot carry over.
    fn check_layout(&self) -> Result<Vec<&'static str>> {
        let refuse = |why: String| {
            anyhow::anyhow!(
                "the data path pinned at {} {why}; `netpath system reset` replaces it \
                 (removing every sandbox and network)",
                self.dir.display()
            )
        };
        match self.pinned_layout()? {
            Some(v) if v == map_layout::VERSION => {}
            Some(v) => return Err(refuse(format!("has map layout {v}, this build has {}", map_layout::VERSION))),
            // Pins from before versioning (the layout of version 1 without
            // its marker, or older): carried over if the sizes agree.
            None => {}
        }
        let mut missing = Vec::new();
        for m in map_layout::ALL {
            let pin = self.maps_dir().join(m.name);
            if !pin.exists() {
                if !MIGRATIONS.iter().any(|(name, _)| *name == m.name) {
                    return Err(refuse(format!("lacks map {}, which this build cannot rebuild", m.name)));
                }
                missing.push(m.name);
                continue;
            }
            let info = MapInfo::from_pin(&pin).with_context(|| format!("opening pinned map {}", pin.display()))?;
            let (key, value) = (info.key_size() as usize, info.value_size() as usize);
            // Per-CPU maps report the value size of one CPU.
            if key != m.key_size || value != m.value_size {
                return Err(refuse(format!(
                    "has an incompatible map {} (key {key}, value {value} bytes; this build: {}, {})",
                    m.name, m.key_size, m.value_size
                )));
            }
        }
        Ok(missing)
    }

    /// Replaces the pinned programs with this build's while keeping every
    /// map (conntrack, endpoints, counters) and every attachment: the new
    /// programs are loaded over the pinned maps and verified first, then
    /// each pinned link is switched to its new program with
    /// `BPF_LINK_UPDATE` (atomic per hook), then the program pins and the
    /// markers are replaced. A failure before the switch changes nothing
    /// (but maps created for the new layout); a failed switch leaves the
    /// marker of the old build, so the next command tries again.
    pub fn upgrade(&self) -> Result<Upgraded> {
        let missing = self.check_layout()?;
        let from_layout = self.pinned_layout()?;
        let mut ebpf = self.load_object(None)?;
        for name in &missing {
            if let Some((_, fill)) = MIGRATIONS.iter().find(|(n, _)| n == name) {
                fill(self).with_context(|| format!("filling the new map {name}"))?;
            }
        }
        load_programs(&mut ebpf)?;

        let mut switch = Teardown::new();
        let mut links = 0;
        let dir = self.dir.join("links");
        let pins = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for pin in pins {
            let pin = pin?.path();
            let file = pin.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let Some((_, program)) = file.rsplit_once('@') else { continue };
            let result = program_mut(&mut ebpf, program).and_then(|prog| {
                let fd = prog.fd().with_context(|| format!("{program} has no fd"))?;
                sys::link_update(&pin, fd.as_fd()).with_context(|| format!("switching {file} to the new {program}"))
            });
            links += usize::from(result.is_ok());
            switch.step(format!("link {file}"), result);
        }
        switch.finish().context("upgrading the data path in place")?;

        for name in all_programs() {
            // Pinned beside the old pin, then renamed over it, so that the
            // program is never unpinned (which `is_loaded` would take for an
            // unloaded data path).
            let fresh = self.dir.join("programs").join(format!("{name}-new"));
            let _ = fs::remove_file(&fresh);
            program_mut(&mut ebpf, name)?.pin(&fresh).with_context(|| format!("pinning the new {name}"))?;
            fs::rename(&fresh, self.program_pin(name)).with_context(|| format!("replacing the pin of {name}"))?;
        }
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("object-") || name.starts_with("layout-") {
                fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        fs::create_dir(self.layout_marker(map_layout::VERSION)).context("marking the map layout")?;
        fs::create_dir(self.object_stamp()).context("stamping the pinned object")?;
        Ok(Upgraded { links, created_maps: missing, from_layout })
    }

    /// Which program each pinned link runs, as the kernel says: (link pin
    /// name, program id).
    pub fn link_programs(&self) -> Result<Vec<(String, u32)>> {
        let dir = self.dir.join("links");
        let mut out = Vec::new();
        for pin in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let pin = pin?.path();
            let link: FdLink = PinnedLink::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?.into();
            let name = pin.file_name().unwrap_or_default().to_string_lossy().into_owned();
            out.push((name, link.info()?.program_id()));
        }
        out.sort();
        Ok(out)
    }

    /// The kernel's view of a pinned program.
    pub fn program_info(&self, name: &str) -> Result<ProgramInfo> {
        ProgramInfo::from_pin(self.program_pin(name)).with_context(|| format!("opening pinned {name}"))
    }

    /// The kernel's id of a pinned map.
    pub fn map_id(&self, name: &str) -> Result<u32> {
        let pin = self.maps_dir().join(name);
        Ok(MapInfo::from_pin(&pin).with_context(|| format!("opening pinned map {}", pin.display()))?.id())
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

    /// Overlay side: TC ingress of the host's VXLAN device (once).
    pub fn attach_overlay_device(&self, ifname: &str) -> Result<()> {
        if self.link_pin(ifname, program_names::FROM_OVERLAY).exists() {
            return Ok(());
        }
        self.attach(program_names::FROM_OVERLAY, ifname)
    }

    pub fn detach_overlay_device(&self, ifname: &str) -> Result<()> {
        self.detach(program_names::FROM_OVERLAY, ifname)
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

    /// Makes local network `index` an overlay network: its VNI, and the
    /// VXLAN device its packets to other hosts are handed to.
    pub fn set_overlay_network(&self, index: u32, overlay: OverlayNetwork) -> Result<()> {
        let mut nets: HashMap<MapData, u32, OverlayNetwork> =
            HashMap::try_from(self.map(map_names::OVERLAY_NETWORKS)?)?;
        let mut vnis: HashMap<MapData, VniKey, u32> = HashMap::try_from(self.map(map_names::VNIS)?)?;
        vnis.insert(VniKey { vni: overlay.vni }, index, 0).context("writing VNI")?;
        nets.insert(index, overlay, 0).context("writing overlay network")
    }

    pub fn remove_overlay_network(&self, index: u32, vni: u32, subnet: ipnetwork::Ipv4Network) -> Result<()> {
        let mut nets: HashMap<MapData, u32, OverlayNetwork> =
            HashMap::try_from(self.map(map_names::OVERLAY_NETWORKS)?)?;
        let mut vnis: HashMap<MapData, VniKey, u32> = HashMap::try_from(self.map(map_names::VNIS)?)?;
        let mut subnets = self.overlay_subnets()?;
        let mut teardown = Teardown::new();
        teardown.step("overlay network entry", ignore_missing(nets.remove(&index)));
        teardown.step("VNI entry", ignore_missing(vnis.remove(&VniKey { vni })));
        teardown.step("subnet entry", ignore_missing(subnets.remove(&subnet_key(subnet))));
        teardown.finish()
    }

    fn overlay_subnets(&self) -> Result<LpmTrie<MapData, [u8; 4], u32>> {
        Ok(LpmTrie::try_from(self.map(map_names::OVERLAY_SUBNETS)?)?)
    }

    /// Records that addresses in `subnet` belong to local network `index`
    /// (an overlay network: its sandboxes may be on any host).
    pub fn set_overlay_subnet(&self, index: u32, subnet: ipnetwork::Ipv4Network) -> Result<()> {
        self.overlay_subnets()?.insert(&subnet_key(subnet), index, 0).context("writing overlay subnet")
    }

    /// How many overlay networks have entries (the VXLAN device goes with
    /// the last).
    pub fn overlay_network_count(&self) -> Result<usize> {
        let nets: HashMap<MapData, u32, OverlayNetwork> = HashMap::try_from(self.map(map_names::OVERLAY_NETWORKS)?)?;
        Ok(nets.keys().filter_map(|k| k.ok()).count())
    }

    pub fn remote_endpoints(&self) -> Result<HashMap<MapData, RemoteEndpointKey, RemoteEndpoint>> {
        Ok(HashMap::try_from(self.map(map_names::REMOTE_ENDPOINTS)?)?)
    }

    pub fn set_remote_endpoint(&self, key: RemoteEndpointKey, ep: RemoteEndpoint) -> Result<()> {
        self.remote_endpoints()?.insert(key, ep, 0).context("writing remote endpoint")
    }

    pub fn remove_remote_endpoint(&self, key: RemoteEndpointKey) -> Result<()> {
        ignore_missing(self.remote_endpoints()?.remove(&key)).context("removing remote endpoint")
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

    /// The table of connections not yet confirmed from both sides.
    pub fn conntrack_new(&self) -> Result<HashMap<MapData, FlowKey, CtEntry>> {
        Ok(HashMap::try_from(self.map(map_names::CT_NEW)?)?)
    }

    /// Every tracked connection direction, confirmed ones first.
    pub fn conntrack_entries(&self) -> Result<Vec<(FlowKey, CtEntry)>> {
        let mut entries: Vec<_> = self.conntrack()?.iter().filter_map(|r| r.ok()).collect();
        entries.extend(self.conntrack_new()?.iter().filter_map(|r| r.ok()));
        Ok(entries)
    }

    /// Deletes the entries `doomed` selects from both tables; returns how
    /// many went.
    pub fn remove_conntrack(&self, doomed: impl Fn(&FlowKey, &CtEntry) -> bool) -> Result<usize> {
        let mut removed = 0;
        for mut ct in [self.conntrack()?, self.conntrack_new()?] {
            let keys: Vec<FlowKey> =
                ct.iter().filter_map(|r| r.ok()).filter(|(k, e)| doomed(k, e)).map(|(k, _)| k).collect();
            for k in &keys {
                ignore_missing(ct.remove(k))?;
            }
            removed += keys.len();
        }
        Ok(removed)
    }

    /// What `program` counted per verdict reason, summed over CPUs.
    pub fn counters(&self, program: Program) -> Result<Counters> {
        let stats: PerCpuArray<MapData, ReasonStats> = PerCpuArray::try_from(self.map(map_names::STATS)?)?;
        let mut total = Counters::default();
        // A STATS pinned by a build with fewer programs (kept through an
        // upgrade in place) has no slots for the newer ones: they count
        // nothing until a reset.
        if (program as u32 + 1) * REASON_SLOTS as u32 > stats.len() {
            return Ok(total);
        }
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

/// What an upgrade in place did.
#[derive(Debug)]
pub struct Upgraded {
    /// Pinned links switched to the new programs.
    pub links: usize,
    /// Maps the old build lacked, created and filled.
    pub created_maps: Vec<&'static str>,
    /// The layout the pins had (`None`: from before versioning).
    pub from_layout: Option<u32>,
}

impl std::fmt::Display for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data path upgraded in place: {} links switched to the new programs, maps kept", self.links)?;
        if !self.created_maps.is_empty() {
            write!(f, ", new maps {}", self.created_maps.join(", "))?;
        }
        match self.from_layout {
            Some(v) => write!(f, " (map layout {v})"),
            None => write!(f, " (pins from before layout versioning, now layout {})", map_layout::VERSION),
        }
    }
}

/// Maps a newer build may find missing in older pins, and how each is
/// filled from the maps that are there. CT_NEW (unconfirmed connections)
/// and FRAGS (first fragments' ports) start empty: a connection opened
/// before the upgrade is already in CONNTRACK, and a datagram in flight
/// loses at most its later fragments.
/// The overlay's maps start empty too: a data path pinned before them had
/// no overlay network, and the agent refills REMOTE_ENDPOINTS on resync.
const MIGRATIONS: &[(&str, Fill)] = &[
    (map_names::VETHS, fill_veths),
    (map_names::CT_NEW, starts_empty),
    (map_names::FRAGS, starts_empty),
    (map_names::OVERLAY_NETWORKS, starts_empty),
    (map_names::VNIS, starts_empty),
    (map_names::REMOTE_ENDPOINTS, starts_empty),
    (map_names::OVERLAY_SUBNETS, starts_empty),
];

fn starts_empty(_: &Datapath) -> Result<()> {
    Ok(())
}

/// Fills a map created for an upgrade from the maps that were there.
type Fill = fn(&Datapath) -> Result<()>;

/// VETHS (host veth -> endpoint) came after ENDPOINTS, which has it all.
fn fill_veths(datapath: &Datapath) -> Result<()> {
    let endpoints: Vec<(EndpointKey, Endpoint)> = datapath.endpoints()?.iter().filter_map(|r| r.ok()).collect();
    let mut veths = datapath.veths()?;
    for (key, ep) in endpoints {
        veths.insert(VethKey { host_ifindex: ep.host_ifindex }, key, 0).context("writing veth")?;
    }
    Ok(())
}

/// Every program of the object, by pin name.
fn all_programs() -> impl Iterator<Item = &'static str> {
    TC_PROGRAMS
        .iter()
        .map(|(n, _)| *n)
        .chain(SOCK_PROGRAMS.iter().map(|(n, _)| *n))
        .chain([program_names::XDP_FROM_UPLINK])
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).with_context(|| format!("object lacks program {name}"))
}

/// Loads (verifies) every program of the object.
fn load_programs(ebpf: &mut Ebpf) -> Result<()> {
    for (name, _) in TC_PROGRAMS {
        let prog: &mut SchedClassifier = program_mut(ebpf, name)?.try_into()?;
        prog.load().with_context(|| format!("verifier rejected {name}"))?;
    }
    for (name, _) in SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr = program_mut(ebpf, name)?.try_into()?;
        prog.load().with_context(|| format!("verifier rejected {name}"))?;
    }
    let name = program_names::XDP_FROM_UPLINK;
    let prog: &mut Xdp = program_mut(ebpf, name)?.try_into()?;
    prog.load().with_context(|| format!("verifier rejected {name}"))
}

/// The one bpf(2) command aya 0.14 has no public wrapper for on every link
/// kind (it has `attach_to_link` for TC and XDP, not for cgroup links).
mod sys {
    use std::{
        ffi::CString,
        io,
        os::{
            fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
            unix::ffi::OsStrExt,
        },
        path::Path,
    };

    use aya_obj::generated::{bpf_attr, bpf_cmd};

    fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
        // SAFETY: `attr` is a zero-initialised bpf_attr of the size passed;
        // the kernel reads (and for some commands writes) only within it.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut bpf_attr, std::mem::size_of::<bpf_attr>())
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
    }

    /// Opens a pinned object (BPF_OBJ_GET).
    fn obj_get(pin: &Path) -> io::Result<OwnedFd> {
        let path = CString::new(pin.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
        let fd = bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Makes the link pinned at `pin` run `program` from now on
    /// (BPF_LINK_UPDATE): atomic, the hook never runs without a program.
    pub fn link_update(pin: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
        let link = obj_get(pin)?;
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.link_update.link_fd = link.as_raw_fd() as u32;
        attr.link_update.__bindgen_anon_1.new_prog_fd = program.as_raw_fd() as u32;
        bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr).map(|_| ())
    }
}

fn subnet_key(subnet: ipnetwork::Ipv4Network) -> aya::maps::lpm_trie::Key<[u8; 4]> {
    aya::maps::lpm_trie::Key::new(u32::from(subnet.prefix()), subnet.network().octets())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every map of the object is in the layout table (what the loader
    /// pins), once, and the table is the one recorded for its version: a
    /// change of any map's key or value fails here until
    /// `map_layout::VERSION` is bumped and this record follows it (or the
    /// change is shown to keep the layout).
    #[test]
    fn map_layout_is_versioned() {
        let object = aya_obj::Object::parse(OBJECT).expect("parsing the embedded object");
        // Data sections (`.rodata`, `.bss`) are maps to the loader, not ours.
        let mut in_object: Vec<&str> = object.maps.keys().map(String::as_str).filter(|n| !n.starts_with('.')).collect();
        let mut names: Vec<&str> = map_layout::ALL.iter().map(|m| m.name).collect();
        in_object.sort_unstable();
        names.sort_unstable();
        assert_eq!(names, in_object, "the layout table lists every map of the object, once");
        let sizes: Vec<(&str, usize, usize)> =
            map_layout::ALL.iter().map(|m| (m.name, m.key_size, m.value_size)).collect();
        let recorded: (u32, &[(&str, usize, usize)]) = (
            1,
            &[
                ("ENDPOINTS", 4, 16),
                ("NETWORKS", 4, 28),
                ("UPLINKS", 4, 4),
                ("PUBLISHED", 8, 8),
                ("PUBLISHED_RANGES", 4, 16),
                ("CONNTRACK", 16, 48),
                ("HOST_ADDRS", 4, 1),
                ("SOCK_REVNAT", 16, 8),
                ("LINKS", 8, 1),
                ("CONFIG", 4, 32),
                ("STATS", 4, 16),
                ("VETHS", 4, 4),
                ("CT_NEW", 16, 48),
                ("FRAGS", 40, 4),
                ("OVERLAY_NETWORKS", 4, 8),
                ("VNIS", 4, 4),
                ("REMOTE_ENDPOINTS", 24, 24),
                ("OVERLAY_SUBNETS", 8, 4),
            ],
        );
        assert_eq!((map_layout::VERSION, &sizes[..]), recorded);
    }

    #[test]
    fn upgrades_read_well() {
        let u = Upgraded { links: 3, created_maps: vec![map_names::VETHS], from_layout: None };
        assert_eq!(
            u.to_string(),
            "data path upgraded in place: 3 links switched to the new programs, maps kept, new maps VETHS \
             (pins from before layout versioning, now layout 1)"
        );
    }
}
