//! Installs what building and testing netpath needs on a Debian 12 machine,
//! following ../shared/TOOLCHAIN.md. Idempotent: each step checks first.
use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// Debian packages: the bpf-capable rustc and its prebuilt `core`, the LLVM
/// bpf-linker links against, and the tools the lab and tests call.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "iptables",
    "nftables",
    "iperf3",
    "iputils-ping",
    "ethtool",
    // etcd-client (the Rust crate) compiles etcd's .proto files with prost,
    // which needs protoc and the well-known types (google/protobuf/*.proto).
    "protobuf-compiler",
    "libprotobuf-dev",
];
/// The cluster store the overlay's lab tests start inside a lab namespace
/// (never as the machine's service).
const CLUSTER_PACKAGES: &[&str] = &["etcd-server", "etcd-client"];
const BPF_LINKER_VERSION: &str = "0.13.0";
const TOOLCHAIN: &str = "netpath-bpf";
const TOOLCHAIN_DIR: &str = "/opt/netpath-bpf";

pub fn ensure() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("netpath manages namespaces, links and BPF programs: run as root");
    }
    apt_packages()?;
    install_without_services(CLUSTER_PACKAGES)?;
    bpf_linker()?;
    linked_toolchain()?;
    nextest()
}

/// The real peers netpath is measured (bench) and compared (parity test)
/// against. Kept out of `ensure`, which `build` and `run` need alone.
const BENCH_PACKAGES: &[&str] = &[
    "docker.io",
    "runc",
    "containerd",
    "busybox-static",
    "iptables",
    "iperf3",
    "podman",
    "netavark",
    "aardvark-dns",
    "conmon",
];

/// Installs the bench's peers. Package scripts must not start dockerd or
/// containerd (or podman's socket) on the machine itself (the bench runs its own, inside a lab
/// namespace).
pub fn bench_extras() -> Result<()> {
    install_without_services(BENCH_PACKAGES)
}

/// Installs `packages` (those missing) while refusing every service start
/// their scripts attempt: the lab runs its own daemons inside namespaces.
fn install_without_services(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\n# written by netpath's xtask while installing lab peers\nexit 101\n")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    eprintln!("setup: installing lab peers {}", missing.join(" "));
    let result = run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn cargo_bin(name: &str) -> std::path::PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"));
    home.join("bin").join(name)
}

fn bpf_linker() -> Result<()> {
    let have = Command::new(cargo_bin("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if have {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22");
    run(Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

/// A rustup toolchain pairing Debian's rustc (which ships a prebuilt bpf
/// `core`) with stable cargo, for aya-build to call.
fn linked_toolchain() -> Result<()> {
    let bin = Path::new(TOOLCHAIN_DIR).join("bin");
    let ok = succeeds(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"]))
        && std::fs::read_link(bin.join("rustc")).is_ok_and(|t| t == Path::new("/usr/bin/rustc"));
    if ok {
        return Ok(());
    }
    eprintln!("setup: linking rustup toolchain {TOOLCHAIN}");
    let cargo = Command::new("rustup")
        .args(["which", "cargo", "--toolchain", "stable"])
        .output()
        .context("rustup which cargo")?;
    let cargo = String::from_utf8(cargo.stdout)?.trim().to_string();
    if cargo.is_empty() {
        bail!("no stable cargo known to rustup");
    }
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(Path::new(TOOLCHAIN_DIR).join("lib"))?;
    for (name, target) in [("rustc", "/usr/bin/rustc"), ("cargo", cargo.as_str())] {
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, TOOLCHAIN_DIR]))
}

fn nextest() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if succeeds(Command::new(&cargo).args(["nextest", "--version"])) {
        return Ok(());
    }
    eprintln!("setup: installing cargo-nextest");
    run(Command::new(cargo).args(["install", "cargo-nextest", "--locked"]))
}
