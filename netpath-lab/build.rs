//! Builds the rig's kernel program (netpath-lab-ebpf: the wire-frame
//! sender) for the bpf target, the same way netpath-user builds the data
//! path, so a plain `cargo build` yields a netpath-lab binary with its object
//! embedded (see ../shared/TOOLCHAIN.md for the `netpath-bpf` toolchain).
fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("lab-wire");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1") && !out.exists() {
        // clippy and docs need no object; an empty one fails loudly at load.
        std::fs::write(&out, [])?;
    }
    aya_build::build_ebpf(
        [aya_build::Package { name: "netpath-lab-ebpf", root_dir: "../netpath-lab-ebpf", ..Default::default() }],
        aya_build::Toolchain::Custom("netpath-bpf"),
    )
}
