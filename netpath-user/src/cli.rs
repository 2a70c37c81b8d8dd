//! The `netpath` command line, in Docker's words wherever Docker has them.
//! Every subcommand is a thin caller of the library.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::{
    conntrack,
    host::Host,
    network,
    paths::Roots,
    publish,
    sandbox::{self, RunRequest},
    state::{State, Store},
    stats, system,
    teardown::Teardown,
};

#[derive(Parser, Debug)]
#[command(name = "netpath", version, about = "Docker-style container networking with an eBPF data path")]
pub struct Cli {
    /// Persistent state directory.
    #[arg(long, env = Roots::STATE_ENV, default_value = Roots::DEFAULT_STATE, global = true)]
    state_dir: PathBuf,
    /// Runtime directory (namespace mounts, logs).
    #[arg(long, env = Roots::RUN_ENV, default_value = Roots::DEFAULT_RUN, global = true)]
    run_dir: PathBuf,
    /// bpffs directory for pinned programs, maps and links.
    #[arg(long, env = Roots::BPF_ENV, default_value = Roots::DEFAULT_BPF, global = true)]
    bpf_dir: PathBuf,
    /// Configuration file in Docker's daemon.json format.
    #[arg(long, env = Roots::CONFIG_ENV, default_value = Roots::DEFAULT_CONFIG, global = true)]
    config: PathBuf,
    /// cgroup v2 directory for the socket programs (host-local access).
    #[arg(long, env = Roots::CGROUP_ENV, global = true)]
    cgroup: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Create a sandbox and run a command in it.
    Run(RunArgs),
    /// Run a command in an existing sandbox.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The resolver process for user-defined networks (started by netpath).
    #[command(hide = true)]
    DnsServe,
    /// List sandboxes.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove sandboxes.
    Rm {
        /// Kill what runs inside first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List port mappings of a sandbox, as `docker port` does.
    Port {
        name: String,
        /// PORT[/PROTO]
        port: Option<String>,
    },
    /// Inspect and clean the connection tracking table.
    #[command(subcommand)]
    Conntrack(ConntrackCommand),
    /// Show what the data path counted.
    Stats {
        #[arg(long)]
        json: bool,
        /// Refresh once a second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Instance-wide operations.
    #[command(subcommand)]
    System(SystemCommand),
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a sandbox to a network (it gets one more interface).
    Connect {
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        ip: Option<String>,
        network: String,
        sandbox: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect { network: String, sandbox: String },
}

#[derive(Subcommand, Debug)]
enum ConntrackCommand {
    /// List tracked connections, one line per direction.
    Ls,
    /// Delete expired entries now instead of when next looked up.
    Gc,
}

#[derive(Subcommand, Debug)]
enum SystemCommand {
    /// Remove every sandbox and network, the default one included, and
    /// unload the data path.
    Reset,
    /// Report work a crashed command left, what a reboot lost, and
    /// namespaces, files, bridges, pins and map entries no record names.
    Check {
        /// Finish or roll back that work, restore, and remove the orphans.
        #[arg(long)]
        repair: bool,
    },
    /// Rebuild networks, bridges, uplink programs and the data path from the
    /// state and remove sandboxes whose namespaces are gone (run at boot).
    Restore,
}

#[derive(Args, Debug)]
struct CreateArgs {
    name: String,
    #[arg(short, long)]
    driver: Option<String>,
    #[arg(long)]
    subnet: Option<String>,
    #[arg(long)]
    gateway: Option<String>,
    #[arg(long)]
    ip_range: Option<String>,
    #[arg(long)]
    mtu: Option<u32>,
    #[arg(long)]
    internal: bool,
    /// Driver options, KEY=VALUE.
    #[arg(short = 'o', long = "opt")]
    opts: Vec<String>,
    #[arg(long = "label")]
    labels: Vec<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Leave the sandbox up; with a command, run it in the background.
    #[arg(short, long)]
    detach: bool,
    /// Remove the sandbox when the command exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: String,
    #[arg(long, alias = "net")]
    network: Option<String>,
    #[arg(long)]
    ip: Option<String>,
    #[arg(long)]
    mac_address: Option<String>,
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Publish ports: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO], ranges allowed.
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Names this sandbox answers to on a user-defined network.
    #[arg(long = "network-alias", alias = "net-alias")]
    aliases: Vec<String>,
    /// NAME[:ALIAS] of a sandbox on the default network.
    #[arg(long = "link")]
    links: Vec<String>,
    /// Ports offered to linked sandboxes without publishing them.
    #[arg(long)]
    expose: Vec<String>,
    #[arg(long)]
    dns: Vec<String>,
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    #[arg(long = "dns-option")]
    dns_options: Vec<String>,
    /// NAME:IP (IP may be host-gateway).
    #[arg(long = "add-host")]
    add_hosts: Vec<String>,
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netpath: {}", one_line(&e));
            1
        }
    }
}

/// The error chain on one line, outermost context first.
fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

fn dispatch(cli: Cli) -> Result<i32> {
    let roots = Roots {
        state: cli.state_dir,
        run: cli.run_dir,
        bpf: cli.bpf_dir,
        config: cli.config,
        cgroup: cli.cgroup.unwrap_or_else(Roots::default_cgroup),
    };
    // Work a crashed command left is finished or rolled back, and the first
    // command after boot restores, before anything else.
    if !matches!(cli.command, Command::DnsServe | Command::System(_)) {
        if let Err(e) = system::recover(&roots) {
            eprintln!("netpath: warning: {}", one_line(&e));
        }
    }
    // A resolver that died (kill -9, a crash) comes back with the next command.
    if !matches!(cli.command, Command::DnsServe | Command::System(_)) {
        if let Err(e) = crate::dns::revive(&roots) {
            eprintln!("netpath: warning: {}", one_line(&e));
        }
    }
    match cli.command {
        Command::Network(cmd) => network_command(roots, cmd),
        Command::Run(args) => run(roots, args),
        Command::Exec { name, command } => {
            let (sandbox, state) = {
                let (_store, state) = Store::open(&roots)?;
                (state.sandbox(&name)?.clone(), state)
            };
            Ok(sandbox::exit_code(sandbox::run_foreground(&roots, &state, &sandbox, &command)?))
        }
        Command::DnsServe => crate::dns::server::serve(roots),
        Command::Ps { json } => {
            let (_store, state) = Store::open(&roots)?;
            print_ps(&state, json)?;
            Ok(0)
        }
        Command::Rm { force, names } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let mut orphans = Vec::new();
            for name in &names {
                // `rm -f` also takes what a lost record left on disk.
                if let Err(e) = state.sandbox(name) {
                    if !force || !sandbox::remove_orphan(&host, name)? {
                        return Err(e);
                    }
                    println!("{name}");
                    orphans.push(name);
                }
            }
            let mut teardown = Teardown::new();
            for name in names.iter().filter(|n| !orphans.contains(n)) {
                let removed = sandbox::remove(&host, &store, &mut state, name, force);
                if removed.is_ok() {
                    println!("{name}");
                }
                teardown.step(format!("removing {name}"), removed);
            }
            store.save(&state)?;
            teardown.finish().map(|()| 0)
        }
        Command::Port { name, port } => {
            let (_store, state) = Store::open(&roots)?;
            let sandbox = state.sandbox(&name)?;
            let filter = port.as_deref().map(publish::parse_filter).transpose()?;
            let lines = publish::describe(&sandbox.published, filter);
            if lines.is_empty() {
                if let Some(p) = port {
                    anyhow::bail!("no public port '{p}' published for {name}");
                }
            }
            for l in lines {
                println!("{l}");
            }
            Ok(0)
        }
        Command::Conntrack(ConntrackCommand::Ls) => {
            let datapath = crate::datapath::Datapath::at(&roots.bpf);
            if datapath.is_loaded() {
                print!("{}", conntrack::render(&datapath.conntrack_entries()?, conntrack::now_ns()));
            }
            Ok(0)
        }
        Command::Conntrack(ConntrackCommand::Gc) => {
            let datapath = crate::datapath::Datapath::at(&roots.bpf);
            if datapath.is_loaded() {
                println!("{} expired entries removed", conntrack::collect_garbage(&datapath)?);
            }
            Ok(0)
        }
        Command::Stats { json, watch } => stats::show(&roots, json, watch),
        Command::System(SystemCommand::Reset) => {
            let host = Host::open(roots)?;
            let (store, mut state, salvaged) = Store::open_salvaging(&host.roots)?;
            if let Some(s) = salvaged {
                eprintln!("netpath: warning: unreadable state file kept as {} ({})", s.moved_to.display(), s.error);
            }
            let result = system::reset(&host, &store, &mut state);
            store.save(&state)?;
            for line in result? {
                println!("{line}");
            }
            Ok(0)
        }
        Command::System(SystemCommand::Check { repair }) => {
            let host = Host::open(roots)?;
            let (store, mut state, salvaged) = if repair {
                Store::open_salvaging(&host.roots)?
            } else {
                let (store, state) = Store::open(&host.roots)?;
                (store, state, None)
            };
            if let Some(s) = &salvaged {
                println!(
                    "unreadable state file kept as {} ({}): starting from an empty state",
                    s.moved_to.display(),
                    s.error
                );
            }
            let what = system::Repair { act: repair, restore: false, sweep: true };
            let lines = system::repair(&host, &store, &mut state, what)?;
            for line in &lines {
                println!("{line}");
            }
            Ok(if repair || (lines.is_empty() && salvaged.is_none()) { 0 } else { 1 })
        }
        Command::System(SystemCommand::Restore) => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let what = system::Repair { act: true, restore: true, sweep: false };
            for line in system::repair(&host, &store, &mut state, what)? {
                println!("{line}");
            }
            Ok(0)
        }
    }
}

fn network_command(roots: Roots, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let req = network::CreateRequest {
                name: a.name,
                driver: a.driver,
                subnet: a.subnet,
                gateway: a.gateway,
                ip_range: a.ip_range,
                mtu: a.mtu,
                internal: a.internal,
                options: a.opts,
                labels: a.labels,
            };
            let net = network::create(&host, &store, &mut state, &req)?;
            store.save(&state)?;
            println!("{}", net.id);
        }
        NetworkCommand::Ls => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            if network::ensure_default(&host, &store, &mut state)?.is_some() {
                store.save(&state)?;
            }
            println!("{:<15}{:<20}{:<10}SCOPE", "NETWORK ID", "NAME", "DRIVER");
            for n in state.networks.values() {
                println!("{:<15}{:<20}{:<10}local", &n.id[..12], n.name, n.driver);
            }
        }
        NetworkCommand::Inspect { names } => {
            let (_store, state) = Store::open(&roots)?;
            let docs = names
                .iter()
                .map(|n| Ok(network::inspect::document(&state, state.network(n)?)))
                .collect::<Result<Vec<_>>>()?;
            println!("{}", serde_json::to_string_pretty(&docs)?);
        }
        NetworkCommand::Rm { names } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            for name in &names {
                state.network(name)?;
            }
            // Each network goes on its own; one that fails does not keep
            // the others, and every failure is reported.
            let mut teardown = Teardown::new();
            for name in &names {
                let removed = network::remove(&host, &store, &mut state, name, false);
                store.save(&state)?;
                if removed.is_ok() {
                    println!("{name}");
                }
                teardown.step(format!("removing {name}"), removed);
            }
            teardown.step("resolver", crate::dns::ensure(&host, &state));
            teardown.finish()?;
        }
        NetworkCommand::Connect { aliases, ip, network, sandbox: name } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            sandbox::connect(&host, &mut state, &network, &name, ip.as_deref(), &aliases)?;
            store.save(&state)?;
        }
        NetworkCommand::Disconnect { network, sandbox: name } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            sandbox::disconnect(&host, &mut state, &network, &name)?;
            store.save(&state)?;
        }
    }
    Ok(0)
}

fn run(roots: Roots, a: RunArgs) -> Result<i32> {
    let req = RunRequest {
        name: a.name.clone(),
        network: a.network,
        ip: a.ip,
        mac: a.mac_address,
        hostname: a.hostname,
        publish: a.publish,
        aliases: a.aliases,
        links: a.links,
        expose: a.expose,
        dns: a.dns,
        dns_search: a.dns_search,
        dns_options: a.dns_options,
        add_hosts: a.add_hosts,
    };
    let host = Host::open(roots)?;
    let sandbox = {
        let (store, mut state) = Store::open(&host.roots)?;
        let mut sandbox = sandbox::create(&host, &store, &mut state, &req)?;
        if a.detach && !a.command.is_empty() {
            sandbox::start_detached(&host, &store, &mut state, &mut sandbox, &a.command)?;
        }
        store.save(&state)?;
        (sandbox, state)
    };
    let (sandbox, state) = sandbox;
    if a.detach {
        println!("{}", sandbox.id);
        return Ok(0);
    }
    let command = if a.command.is_empty() { vec!["/bin/sh".to_string()] } else { a.command };
    let status = sandbox::run_foreground(&host.roots, &state, &sandbox, &command);
    if a.rm {
        let (store, mut state) = Store::open(&host.roots)?;
        sandbox::remove(&host, &store, &mut state, &sandbox.name, true)
            .context("removing the sandbox after its command")?;
        store.save(&state)?;
    }
    Ok(sandbox::exit_code(status?))
}

fn print_ps(state: &State, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&state.sandboxes.values().collect::<Vec<_>>())?);
        return Ok(());
    }
    println!("{:<14}{:<20}{:<16}{:<18}STATUS", "SANDBOX ID", "NAME", "NETWORK", "IP");
    for s in state.sandboxes.values() {
        let running = sandbox::is_running(s);
        let status = if running { format!("running (pid {})", s.pid.unwrap_or(0)) } else { "up".to_string() };
        let (net, ip) =
            s.attachments.first().map_or(("-".to_string(), "-".to_string()), |a| (a.network.clone(), a.ip.to_string()));
        println!("{:<14}{:<20}{:<16}{:<18}{}", &s.id[..12], s.name, net, ip, status);
    }
    Ok(())
}
