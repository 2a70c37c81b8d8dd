//! Builds the kernel programs (netpath-ebpf) for the bpf target so that a plain
//! `cargo build` yields a netpath binary with its object embedded. The linked
//! `netpath-bpf` toolchain pairs Debian's rustc (prebuilt bpf `core`) with
//! stable cargo; `cargo xtask setup` creates it (see ../shared/TOOLCHAIN.md).
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../netpath-common/src");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("netpath");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1") && !out.exists() {
        // clippy and docs need no object; an empty one fails loudly at load.
        std::fs::write(&out, [])?;
    }
    // The test-only variant with a changed program (see netpath-ebpf's features).
    let features: &[&str] =
        if std::env::var_os("CARGO_FEATURE_UPGRADE_PROBE").is_some() { &["upgrade-probe"] } else { &[] };
    aya_build::build_ebpf(
        [aya_build::Package { name: "netpath-ebpf", root_dir: "../netpath-ebpf", features, ..Default::default() }],
        aya_build::Toolchain::Custom("netpath-bpf"),
    )
}
