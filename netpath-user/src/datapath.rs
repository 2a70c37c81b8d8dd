//! The eBPF side as the loader sees it: one object, loaded once per instance
//! and pinned (programs, maps, and one TCX link per interface) under the
//! instance's bpffs directory, so the data path outlives every `netpath`
//! process and later invocations only open pins.
//!
//! Layout: `<bpf>/programs/<program>`, `<bpf>/maps/<MAP>`, `<bpf>/links/<ifname>`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, links::FdLink, tc},
};
use netpath_common::{Counters, Endpoint, EndpointKey, Program, map_names, program_names};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub struct Datapath {
    dir: PathBuf,
}

impl Datapath {
    /// The data path pinned at `dir`, without loading anything.
    pub fn at(dir: &Path) -> Self {
        Datapath {
            dir: dir.to_path_buf(),
        }
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

    fn link_pin(&self, ifname: &str) -> PathBuf {
        self.dir.join("links").join(ifname)
    }

    pub fn is_loaded(&self) -> bool {
        self.program_pin(program_names::FROM_CONTAINER).exists()
    }

    /// Loads and pins the object unless an earlier run already did.
    pub fn ensure_loaded(&self) -> Result<()> {
        if self.is_loaded() {
            return Ok(());
        }
        ensure_bpffs(&self.dir)?;
        let result = self.load();
        if result.is_err() {
            let _ = self.unload();
        }
        result
    }

    fn load(&self) -> Result<()> {
        for sub in ["programs", "maps", "links"] {
            let d = self.dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut ebpf = Ebpf::load(OBJECT).context("loading the eBPF object")?;
        for name in map_names::ALL {
            let map = ebpf
                .map(name)
                .with_context(|| format!("object lacks map {name}"))?;
            map.pin(self.maps_dir().join(name))
                .with_context(|| format!("pinning map {name}"))?;
        }
        let prog: &mut SchedClassifier = ebpf
            .program_mut(program_names::FROM_CONTAINER)
            .context("object lacks the from_container program")?
            .try_into()?;
        prog.load().context("verifier rejected from_container")?;
        prog.pin(self.program_pin(program_names::FROM_CONTAINER))
            .context("pinning from_container")?;
        Ok(())
    }

    /// Removes every pin: programs, maps and links. Links detach as their
    /// last reference goes.
    pub fn unload(&self) -> Result<()> {
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing pins under {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// Attaches the sandbox-side program to TC ingress of `ifname` (a
    /// host-side veth) and pins the link under the interface's name.
    pub fn attach_from_container(&self, ifname: &str) -> Result<()> {
        let mut prog = SchedClassifier::from_pin(self.program_pin(program_names::FROM_CONTAINER))
            .context("opening pinned from_container")?;
        let id = match prog.attach(ifname, TcAttachType::Ingress) {
            Ok(id) => id,
            // Kernels before TCX need a clsact qdisc for the netlink attach.
            Err(_) => {
                let _ = tc::qdisc_add_clsact(ifname);
                prog.attach(ifname, TcAttachType::Ingress)
                    .with_context(|| format!("attaching from_container to {ifname}"))?
            }
        };
        let link = prog.take_link(id)?;
        // A netlink (pre-TCX) filter is not a pinnable link: it stays on the
        // interface when the process exits and goes away with the interface.
        if let Ok(fd_link) = FdLink::try_from(link) {
            fd_link
                .pin(self.link_pin(ifname))
                .with_context(|| format!("pinning TCX link of {ifname}"))?;
        }
        Ok(())
    }

    /// Drops the pinned link of `ifname`; detaches if the interface still exists.
    pub fn detach(&self, ifname: &str) -> Result<()> {
        let pin = self.link_pin(ifname);
        match fs::remove_file(&pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", pin.display())),
        }
    }

    fn map(&self, name: &str) -> Result<Map> {
        let pin = self.maps_dir().join(name);
        let data = MapData::from_pin(&pin)
            .with_context(|| format!("opening pinned map {}", pin.display()))?;
        Ok(Map::from_map_data(data)?)
    }

    pub fn endpoints(&self) -> Result<HashMap<MapData, EndpointKey, Endpoint>> {
        Ok(HashMap::try_from(self.map(map_names::ENDPOINTS)?)?)
    }

    pub fn set_endpoint(&self, key: EndpointKey, endpoint: Endpoint) -> Result<()> {
        self.endpoints()?
            .insert(key, endpoint, 0)
            .context("writing endpoint")
    }

    pub fn remove_endpoint(&self, key: EndpointKey) -> Result<()> {
        match self.endpoints()?.remove(&key) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("removing endpoint"),
        }
    }

    /// Counters of `program`, summed over CPUs.
    pub fn counters(&self, program: Program) -> Result<Counters> {
        let stats: PerCpuArray<MapData, Counters> =
            PerCpuArray::try_from(self.map(map_names::STATS)?)?;
        let per_cpu = stats.get(&(program as u32), 0).context("reading STATS")?;
        let mut total = Counters::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
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
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting bpffs on /sys/fs/bpf")?;
    Ok(())
}

fn on_bpffs(path: &Path) -> Result<bool> {
    let st =
        nix::sys::statfs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(st.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}
