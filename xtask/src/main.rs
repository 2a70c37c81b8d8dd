//! Build, run, test and bench netpath; every command first installs what the
//! machine lacks (`setup`), so a fresh clone needs no other step.
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: apt packages, bpf-linker, the linked bpf toolchain.
    Setup,
    /// Build target/release/netpath (kernel programs embedded) and the rig,
    /// target/release/netpath-lab.
    Build,
    /// Without arguments: the lab demo with a live view (`netpath-lab demo`).
    /// With `-- ARGS`: `netpath ARGS`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure netpath against Docker's iptables rules, docker-proxy and the
    /// no-NAT bounds in hermetic labs; report under $CARGO_TARGET_DIR/bench.
    Bench {
        /// Shorter runs and smaller sizes (under 10 minutes).
        #[arg(long)]
        quick: bool,
        /// Only these scenarios: s2s, masquerade, published, hairpin, host-local.
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Skip the scaling, conntrack and control-plane runs.
        #[arg(long)]
        no_scaling: bool,
        /// Instead: the cross-host bench on the multi-host lab (kernel VXLAN
        /// Flannel-style against the underlay bound).
        #[arg(long)]
        cross_host: bool,
        /// Only these systems (see `netpath-lab bench --help` and
        /// `netpath-lab bench-cross-host --help` for the names).
        #[arg(long = "system")]
        systems: Vec<String>,
        /// Rounds per metric of the cross-host bench (default 3).
        #[arg(long, requires = "cross_host")]
        reps: Option<u32>,
    },
    /// Write the man pages (one per command) into $CARGO_TARGET_DIR/man,
    /// from the same definition as `netpath --help`.
    Man,
    /// Write bash, zsh and fish completions into $CARGO_TARGET_DIR/completions.
    Completions,
    /// Run the unit and lab tests (root; builds its own namespaces).
    Test {
        /// Extra arguments for cargo nextest (filters, --no-capture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// Cargo's target directory: $CARGO_TARGET_DIR when set, else the workspace's.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The product, as shipped.
fn netpath_bin() -> PathBuf {
    target_dir().join("release/netpath")
}

/// The test and benchmark rig (lab fixture, probes, demo, bench).
fn lab_bin() -> PathBuf {
    target_dir().join("release/netpath-lab")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Task::Setup => setup::ensure(),
        Task::Build => {
            setup::ensure()?;
            build()
        }
        Task::Run { args } => {
            setup::ensure()?;
            build()?;
            let mut cmd = if args.is_empty() {
                let mut demo = Command::new(lab_bin());
                demo.arg("demo").env("NETPATH_BIN", netpath_bin());
                demo
            } else {
                let mut netpath = Command::new(netpath_bin());
                netpath.args(&args);
                netpath
            };
            // Become the program, so that Ctrl-C reaches it (and the demo's
            // lab teardown) rather than killing a parent that leaves it behind.
            let err = std::os::unix::process::CommandExt::exec(&mut cmd);
            Err(err).with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))
        }
        Task::Bench { quick, scenarios, no_scaling, cross_host, systems, reps } => {
            setup::ensure()?;
            setup::bench_extras()?;
            build()?;
            if cross_host {
                let mut cmd = Command::new(lab_bin());
                cmd.env("NETPATH_BIN", netpath_bin());
                cmd.args(["bench-cross-host", "--out"]).arg(target_dir().join("bench"));
                if quick {
                    cmd.arg("--quick");
                }
                for s in &systems {
                    cmd.args(["--system", s]);
                }
                if let Some(reps) = reps {
                    cmd.args(["--reps", &reps.to_string()]);
                }
                return exec(&mut cmd);
            }
            let mut cmd = Command::new(lab_bin());
            cmd.env("NETPATH_BIN", netpath_bin());
            cmd.args(["bench", "--out"]).arg(target_dir().join("bench"));
            if quick {
                cmd.arg("--quick");
            }
            if no_scaling {
                cmd.arg("--no-scaling");
            }
            for s in &scenarios {
                cmd.args(["--scenario", s]);
            }
            for s in &systems {
                cmd.args(["--system", s]);
            }
            exec(&mut cmd)
        }
        Task::Man => {
            build_product()?;
            let dir = target_dir().join("man");
            exec(Command::new(netpath_bin()).arg("man").arg(&dir))?;
            println!("{}", dir.display());
            Ok(())
        }
        Task::Completions => {
            build_product()?;
            let dir = target_dir().join("completions");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (shell, file) in [("bash", "netpath.bash"), ("zsh", "_netpath"), ("fish", "netpath.fish")] {
                let out = Command::new(netpath_bin()).args(["completion", shell]).output()?;
                if !out.status.success() {
                    bail!("netpath completion {shell} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                std::fs::write(dir.join(file), out.stdout)?;
            }
            println!("{}", dir.display());
            Ok(())
        }
        Task::Test { args } => {
            setup::ensure()?;
            // The parity test runs Docker Engine itself, in a lab.
            setup::bench_extras()?;
            // First, so that the shipped build (fresh, copied in place by
            // cargo) is what target/release/netpath holds afterwards.
            build_upgrade_probe()?;
            build()?;
            let mut cmd = cargo();
            cmd.args(["nextest", "run", "--release", "--no-fail-fast"]).args(&args);
            cmd.env("NETPATH_BIN", netpath_bin()).env("NETPATH_LAB_BIN", lab_bin());
            cmd.env("NETPATH_UPGRADE_BIN", upgrade_probe_bin());
            exec(&mut cmd)
        }
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds the product and the rig, each with its kernel object embedded.
fn build() -> Result<()> {
    exec(cargo().args(["build", "--release", "-p", "netpath-user", "-p", "netpath-lab"]).args([
        "--bin",
        "netpath",
        "--bin",
        "netpath-cni",
        "--bin",
        "netpath-lab",
    ]))?;
    for bin in [netpath_bin(), netpath_bin().with_file_name("netpath-cni"), lab_bin()] {
        if !bin.exists() {
            bail!("build finished but {} is missing", bin.display());
        }
    }
    Ok(())
}

/// A second netpath whose kernel programs differ from the shipped ones
/// (netpath-ebpf's test-only `upgrade-probe` feature), for the upgrade test.
fn upgrade_probe_bin() -> PathBuf {
    target_dir().join("release/netpath-upgrade-probe")
}

fn build_upgrade_probe() -> Result<()> {
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "netpath-user",
        "--bin",
        "netpath",
        "--features",
        "upgrade-probe",
    ]))?;
    std::fs::copy(netpath_bin(), upgrade_probe_bin())
        .with_context(|| format!("copying the upgrade-probe build to {}", upgrade_probe_bin().display()))?;
    Ok(())
}

/// Builds the product only (man pages and completions need nothing else).
fn build_product() -> Result<()> {
    setup::ensure()?;
    exec(cargo().args(["build", "--release", "-p", "netpath-user", "--bin", "netpath"]))
}

/// Runs a command to completion and turns a failure into an error carrying its exit code.
fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}
