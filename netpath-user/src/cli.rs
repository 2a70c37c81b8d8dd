//! The `netpath` command line, in Docker's words wherever Docker has them.
//! Every subcommand is a thin caller of the library. Sandbox and network
//! arguments are resolved here, once, by name, ID or unique ID prefix
//! (`crate::lookup`), and the library gets the stored names.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::{
    conntrack, external,
    format::{self, Filters, Format},
    host::Host,
    lookup::{Kind, LookupError},
    network::{self, DEFAULT_NETWORK_NAME},
    paths::Roots,
    publish,
    sandbox::{self, RunRequest},
    state::{State, Store},
    stats, system,
    teardown::Teardown,
    template::Template,
};

/// The heading global options get in every command's help, so that they
/// do not interleave with the command's own.
const GLOBAL: &str = "Global options";

const EXAMPLES: &str = "\
Examples:
  netpath network create web --subnet 10.10.0.0/24
  netpath run -d --name api --network web -p 8080:80 sleep infinity
  netpath ps --format '{{.Names}} {{.ID}}'
  netpath inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' api
  netpath rm -f $(netpath ps -q)

Sandboxes and networks are named by name, ID or a unique prefix of the ID.
In a lab namespace run `nsenter --net=/run/netns/NAME netpath ...`
(not `ip netns exec`, which hides bpffs).";

#[derive(Parser, Debug)]
#[command(
    name = "netpath",
    version,
    about = "Docker-style container networking with an eBPF data path",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Persistent state directory (networks, sandboxes, allocations).
    #[arg(long, env = Roots::STATE_ENV, default_value = Roots::DEFAULT_STATE, global = true,
          value_name = "DIR", help_heading = GLOBAL)]
    state_dir: PathBuf,
    /// Runtime directory (namespace mounts, logs).
    #[arg(long, env = Roots::RUN_ENV, default_value = Roots::DEFAULT_RUN, global = true,
          value_name = "DIR", help_heading = GLOBAL)]
    run_dir: PathBuf,
    /// bpffs directory for pinned programs, maps and links.
    #[arg(long, env = Roots::BPF_ENV, default_value = Roots::DEFAULT_BPF, global = true,
          value_name = "DIR", help_heading = GLOBAL)]
    bpf_dir: PathBuf,
    /// Configuration file in Docker's daemon.json format.
    #[arg(long, env = Roots::CONFIG_ENV, default_value = Roots::DEFAULT_CONFIG, global = true,
          value_name = "FILE", help_heading = GLOBAL)]
    config: PathBuf,
    /// cgroup v2 directory for the socket programs (host-local access)
    /// [default: the cgroup v2 root].
    #[arg(long, env = Roots::CGROUP_ENV, global = true, value_name = "DIR", help_heading = GLOBAL)]
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
    #[command(after_help = "\
Examples:
  netpath run --rm --name t sh -c 'ip addr'            # foreground, removed when sh exits
  netpath run -d --name web --network n1 --ip 10.1.0.10 -p 8080:80
  netpath run -d --name db --network-alias database --network n1 sleep infinity
  netpath run -d --name app --link db:db -p 127.0.0.1::80/udp
  netpath run -d --name side --network container:web

The command follows the options (`--` before it is optional); without one,
a foreground run starts /bin/sh.")]
    Run(RunArgs),
    /// Run a command in an existing sandbox.
    #[command(after_help = "\
Examples:
  netpath exec web ip -4 addr show eth0
  netpath exec 3f2a -- sh -c 'cat /etc/resolv.conf'")]
    Exec {
        /// The sandbox: its name, ID or a unique ID prefix.
        #[arg(value_name = "SANDBOX")]
        name: String,
        /// The command and its arguments (`--` before it is optional).
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// The resolver process for user-defined networks (started by netpath).
    #[command(hide = true)]
    DnsServe,
    /// The cluster agent (started by netpath while daemon.json names a cluster-store).
    #[command(hide = true)]
    Agent,
    /// List sandboxes.
    #[command(after_help = "\
Examples:
  netpath ps -q                                   # IDs only, for $(...)
  netpath ps --filter network=n1 --filter name=web
  netpath ps --format '{{.Names}} {{.ID}}'
  netpath ps --format 'table {{.ID}}\\t{{.Names}}\\t{{.Ports}}'

Template fields: .ID .Names .Networks .IPAddress .Ports .Status .Command .CreatedAt")]
    Ps(PsArgs),
    /// Remove sandboxes.
    #[command(after_help = "\
Examples:
  netpath rm web
  netpath rm -f $(netpath ps -q)                  # every sandbox")]
    Rm {
        /// Remove a sandbox whose detached command still runs (killing it),
        /// and the sandboxes that joined its namespaces.
        #[arg(short, long)]
        force: bool,
        /// Sandboxes: names, IDs or unique ID prefixes.
        #[arg(required = true, value_name = "SANDBOX")]
        names: Vec<String>,
    },
    /// List port mappings of a sandbox, as `docker port` does.
    #[command(after_help = "\
Examples:
  netpath port web
  netpath port web 80/tcp")]
    Port {
        /// The sandbox: its name, ID or a unique ID prefix; or a Docker
        /// container's name or ID on a netpath network (asked of Docker,
        /// whose own `docker port` shows nothing for a plugin's ports).
        #[arg(value_name = "SANDBOX|CONTAINER")]
        name: String,
        /// Only this container port: PORT[/PROTO] (tcp when no protocol is given).
        #[arg(value_name = "PORT[/PROTO]")]
        port: Option<String>,
        /// Docker's API socket, asked when SANDBOX names no sandbox.
        #[arg(long, env = "DOCKER_HOST", default_value = crate::docker_plugin::engine_api::DEFAULT_HOST,
              value_name = "unix://PATH")]
        docker_host: String,
    },
    /// Serve Docker's network plugin protocol (`docker network create -d netpath`).
    #[command(after_help = "\
Examples:
  netpath docker-plugin &
  docker network create -d netpath --subnet 10.88.0.0/24 n1
  docker run -d --network n1 -p 8080:80 --name web IMAGE
  netpath port web

Docker finds the plugin by its socket in /run/docker/plugins (the driver is
named after the socket file). Docker's IPAM chooses the addresses; netpath
wires, forwards, masquerades and publishes. Options as Docker's bridge driver
spells them: -o com.docker.network.bridge.enable_icc=false,
-o com.docker.network.bridge.enable_ip_masquerade=false,
-o com.docker.network.driver.mtu=N, --internal.")]
    DockerPlugin {
        /// The Unix socket to serve on (created mode 0600).
        #[arg(long, default_value = crate::docker_plugin::DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Inspect and clean the connection tracking table.
    #[command(subcommand)]
    Conntrack(ConntrackCommand),
    /// Show what the data path counted.
    Stats {
        /// Print JSON (every program and reason, zeros included) instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh once a second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Instance-wide operations.
    #[command(subcommand)]
    System(SystemCommand),
    /// Show sandboxes or networks as JSON, in the shape of Docker's `inspect`.
    #[command(after_help = "\
Examples:
  netpath inspect web
  netpath inspect -f '{{.NetworkSettings.IPAddress}}' web            # the default network's address
  netpath inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' web
  netpath inspect -f '{{json .NetworkSettings.Ports}}' web
  netpath inspect --type network -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' n1

Templates are Go templates: fields, range, if, with, and the functions
json, index, len, join, split, lower, upper, title, printf, println.")]
    Inspect {
        /// Apply a Go template to each object instead of printing JSON.
        #[arg(short, long, value_name = "TEMPLATE")]
        format: Option<String>,
        /// Only look for objects of this type (sandboxes first otherwise).
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        kind: Option<ObjectType>,
        /// Sandboxes or networks: names, IDs or unique ID prefixes.
        #[arg(required = true, value_name = "NAME|ID")]
        names: Vec<String>,
    },
    /// Show the instance: sandboxes, networks, the data path (programs,
    /// attach points, maps and their fill), uplinks, resolver and files.
    #[command(after_help = "\
Examples:
  netpath info
  netpath info -f '{{.Datapath.Loaded}}'
  netpath info -f '{{range .Datapath.Maps}}{{.Name}} {{.Entries}}/{{.MaxEntries}}{{println}}{{end}}'
  netpath info -f '{{json .}}'")]
    Info {
        /// Apply a Go template to the information instead of printing text.
        #[arg(short, long, value_name = "TEMPLATE")]
        format: Option<String>,
    },
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  netpath completion bash > /etc/bash_completion.d/netpath
  netpath completion zsh > \"${fpath[1]}/_netpath\"
  netpath completion fish > ~/.config/fish/completions/netpath.fish")]
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command (netpath.1, netpath-run.1, ...).
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// What `inspect --type` restricts the search to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ObjectType {
    /// Sandboxes (Docker's containers).
    #[value(alias = "sandbox")]
    Container,
    /// Networks.
    Network,
}

#[derive(Args, Debug)]
struct PsArgs {
    /// Show all sandboxes. They always are (a sandbox has no stopped
    /// state); accepted for Docker's habit.
    #[arg(short, long)]
    all: bool,
    /// Only print sandbox IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print whole IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Only sandboxes matching KEY=VALUE: id=PREFIX, name=PART,
    /// network=NAME|ID_PREFIX. Values of one key are alternatives;
    /// different keys must all match.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Print each sandbox through a Go template; `table` first adds a
    /// header and aligns tab-separated columns.
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Print the sandboxes' records as JSON.
    #[arg(long)]
    json: bool,
}

impl Command {
    /// Commands that change nothing after they start printing.
    fn only_lists(&self) -> bool {
        matches!(
            self,
            Command::Ps(_)
                | Command::Port { .. }
                | Command::Stats { .. }
                | Command::Info { .. }
                | Command::Inspect { .. }
                | Command::Conntrack(ConntrackCommand::Ls)
                | Command::Network(NetworkCommand::Ls(_) | NetworkCommand::Inspect { .. })
        )
    }
}

#[derive(Subcommand, Debug)]
enum NetworkCommand {
    /// Create a network.
    #[command(after_help = "\
Examples:
  netpath network create n1
  netpath network create n2 --subnet 10.20.0.0/24 --gateway 10.20.0.254 --ip-range 10.20.0.128/25
  netpath network create n3 --internal -o com.docker.network.bridge.name=br-n3
  netpath network create -d macvlan -o parent=eth1 --subnet 192.168.50.0/24 mv")]
    Create(CreateArgs),
    /// List networks.
    #[command(
        alias = "list",
        after_help = "\
Examples:
  netpath network ls -q
  netpath network ls --filter driver=bridge --format '{{.Name}} {{.ID}}'

Template fields: .ID .Name .Driver .Scope .IPv6 .Internal .Labels .CreatedAt .Subnet"
    )]
    Ls(NetworkLsArgs),
    /// Show networks as JSON, in the shape of Docker's `network inspect`.
    #[command(after_help = "\
Examples:
  netpath network inspect n1
  netpath network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' n1")]
    Inspect {
        /// Apply a Go template to each network instead of printing JSON.
        #[arg(short, long, value_name = "TEMPLATE")]
        format: Option<String>,
        /// Networks: names, IDs or unique ID prefixes.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(
        alias = "remove",
        after_help = "\
Examples:
  netpath network rm n1 n2"
    )]
    Rm {
        /// Networks: names, IDs or unique ID prefixes.
        #[arg(required = true, value_name = "NETWORK")]
        names: Vec<String>,
    },
    /// Connect a sandbox to a network (it gets one more interface).
    #[command(after_help = "\
Examples:
  netpath network connect n2 web
  netpath network connect --ip 10.20.0.50 --alias api n2 web")]
    Connect {
        /// A name the sandbox answers to on this network (repeatable).
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// IPv4 address on the network (default: the lowest free one).
        #[arg(long, value_name = "IPV4")]
        ip: Option<String>,
        /// The network: its name, ID or a unique ID prefix.
        #[arg(value_name = "NETWORK")]
        network: String,
        /// The sandbox: its name, ID or a unique ID prefix.
        #[arg(value_name = "SANDBOX")]
        sandbox: String,
    },
    /// Disconnect a sandbox from a network.
    #[command(after_help = "\
Examples:
  netpath network disconnect n2 web")]
    Disconnect {
        /// The network: its name, ID or a unique ID prefix.
        #[arg(value_name = "NETWORK")]
        network: String,
        /// The sandbox: its name, ID or a unique ID prefix.
        #[arg(value_name = "SANDBOX")]
        sandbox: String,
    },
    /// Wire an existing network namespace onto a network, exactly as `run`
    /// would (bring your own namespace, as pipework does).
    #[command(after_help = "\
Examples:
  ip netns add app1
  netpath network attach n1 --netns /run/netns/app1 -p 8080:80
  netpath network attach n1 --netns 4242 --name worker --ip 10.20.0.9 --alias api
  netpath network detach n1 app1

The namespace stays someone else's: netpath adds one interface to it and
takes that out again on detach (or rm), and never deletes the namespace.")]
    Attach(AttachArgs),
    /// Undo `network attach`: the interface, data path entries and published
    /// ports go, the namespace stays.
    #[command(after_help = "\
Examples:
  netpath network detach n1 app1
  netpath network detach n1 --netns /run/netns/app1")]
    Detach {
        /// The network: its name, ID or a unique ID prefix.
        #[arg(value_name = "NETWORK")]
        network: String,
        /// The attached sandbox: its name, ID or a unique ID prefix.
        #[arg(value_name = "SANDBOX", required_unless_present = "netns", conflicts_with = "netns")]
        sandbox: Option<String>,
        /// Instead of a name: the namespace that was attached (PATH or PID).
        #[arg(long, value_name = "PATH|PID")]
        netns: Option<String>,
    },
}

#[derive(Args, Debug)]
struct AttachArgs {
    /// The network: its name, ID or a unique ID prefix.
    #[arg(value_name = "NETWORK")]
    network: String,
    /// The namespace to wire: a namespace file (/run/netns/NAME) or the PID
    /// of a process inside it.
    #[arg(long, value_name = "PATH|PID", required = true)]
    netns: String,
    /// Name of the record (what ps shows and the resolver answers to)
    /// [default: the namespace file's name, or pidN].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Interface name inside the namespace [default: the first free ethN].
    #[arg(long, value_name = "IFNAME")]
    ifname: Option<String>,
    /// IPv4 address on the network (default: the lowest free one).
    #[arg(long, value_name = "IPV4")]
    ip: Option<String>,
    /// MAC address of the interface (default: 02:42 followed by the IPv4 bytes).
    #[arg(long, value_name = "MAC")]
    mac_address: Option<String>,
    /// A name the namespace answers to on a user-defined network (repeatable).
    #[arg(long = "alias", alias = "network-alias", value_name = "NAME")]
    aliases: Vec<String>,
    /// Publish a port or range to the host (repeatable):
    /// [IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]; without a
    /// host port, the lowest free one from 32768 up.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
}

#[derive(Args, Debug)]
struct NetworkLsArgs {
    /// Only print network IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print whole IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Only networks matching KEY=VALUE: id=PREFIX, name=PART, driver=NAME.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    /// Print each network through a Go template; `table` first adds a
    /// header and aligns tab-separated columns.
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
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
    /// Put this build's data path programs in place of the pinned ones,
    /// keeping maps, connections and attachments.
    Upgrade,
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
    /// Name of the new network.
    #[arg(value_name = "NAME")]
    name: String,
    /// Driver: bridge (default) or macvlan.
    #[arg(short, long, value_name = "DRIVER")]
    driver: Option<String>,
    /// Subnet in CIDR notation (default: the first free pool of Docker's
    /// defaults, 172.18.0.0/16 ... 172.31.0.0/16, then 192.168.x.0/20).
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// Gateway address, inside the subnet (default: its first address).
    #[arg(long, value_name = "IPV4")]
    gateway: Option<String>,
    /// Allocate sandbox addresses from this part of the subnet only.
    #[arg(long, value_name = "CIDR")]
    ip_range: Option<String>,
    /// MTU of the bridge and the sandboxes' interfaces (default: 1500 or
    /// the config's `mtu`); same as -o com.docker.network.driver.mtu.
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u32>,
    /// No traffic to or from outside the network (no uplink, no masquerade).
    #[arg(long)]
    internal: bool,
    /// Driver option KEY=VALUE (repeatable): com.docker.network.bridge.name,
    /// com.docker.network.driver.mtu, com.docker.network.bridge.enable_icc,
    /// com.docker.network.bridge.enable_ip_masquerade,
    /// com.docker.network.bridge.host_binding_ipv4, com.docker.network.host_ipv4,
    /// parent (macvlan).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
    /// Label KEY=VALUE recorded on the network (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

/// `-h` is the hostname, as in `docker run`: help is `--help` only.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// Leave the sandbox up and print its ID; with a command, run it in the
    /// background (output in RUN_DIR/sandboxes/NAME/log).
    #[arg(short, long)]
    detach: bool,
    /// Remove the sandbox when the command exits.
    #[arg(long)]
    rm: bool,
    /// Name of the sandbox (unique; it also resolves on user-defined networks).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Network to attach to: bridge (default), host, none,
    /// container:SANDBOX (share its namespaces), or a user-defined network.
    #[arg(long, alias = "net", value_name = "NETWORK")]
    network: Option<String>,
    /// IPv4 address on the network (default: the lowest free one).
    #[arg(long, value_name = "IPV4")]
    ip: Option<String>,
    /// MAC address of eth0 (default: 02:42 followed by the IPv4 bytes).
    #[arg(long, value_name = "MAC")]
    mac_address: Option<String>,
    /// Hostname inside the sandbox (default: the short ID).
    #[arg(short = 'h', long, value_name = "NAME")]
    hostname: Option<String>,
    /// Publish a port or range to the host (repeatable):
    /// [IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp]; without a
    /// host port, the lowest free one from 32768 up.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// A name this sandbox answers to on a user-defined network (repeatable).
    #[arg(long = "network-alias", alias = "net-alias", value_name = "NAME")]
    aliases: Vec<String>,
    /// Link to a sandbox on the default network: SANDBOX[:ALIAS] (repeatable);
    /// adds hosts entries and Docker's link variables.
    #[arg(long = "link", value_name = "SANDBOX[:ALIAS]")]
    links: Vec<String>,
    /// Offer a port to linked sandboxes without publishing it:
    /// PORT[/PROTO] (repeatable).
    #[arg(long, value_name = "PORT[/PROTO]")]
    expose: Vec<String>,
    /// DNS server for the sandbox's resolv.conf (repeatable).
    #[arg(long, value_name = "IPV4")]
    dns: Vec<String>,
    /// DNS search domain for the sandbox's resolv.conf (repeatable).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 (repeatable).
    #[arg(long = "dns-option", value_name = "OPTION")]
    dns_options: Vec<String>,
    /// Hosts entry NAME:IP (repeatable); IP may be host-gateway.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_hosts: Vec<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The command to run inside, and its arguments (`--` before it is optional).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    if cli.command.only_lists() {
        // Rust ignores SIGPIPE, so printing into a closed pipe (`| head`)
        // would panic; a listing ends quietly instead, as Unix tools do.
        // SAFETY: setting a signal's disposition to its default.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            1
        }
    }
}

/// The error chain on one line, outermost context first.
fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

/// What a failed command prints: a lookup error on its own in Docker's
/// words (scripts grep for `No such container`), anything else prefixed
/// with the program's name.
fn error_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<LookupError>() {
        Some(lookup) if e.chain().count() == 1 => lookup.docker_line(),
        _ => format!("netpath: {}", one_line(e)),
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    let roots = Roots {
        state: cli.state_dir,
        run: cli.run_dir,
        bpf: cli.bpf_dir,
        config: cli.config,
        cgroup: cli.cgroup.unwrap_or_else(Roots::default_cgroup),
    };
    if !matches!(
        cli.command,
        Command::DnsServe | Command::Agent | Command::System(_) | Command::Completion { .. } | Command::Man { .. }
    ) {
        // Work a crashed command left is finished or rolled back, and the
        // first command after boot restores, before anything else.
        if let Err(e) = system::recover(&roots) {
            eprintln!("netpath: warning: {}", one_line(&e));
        }
        // A resolver that died (kill -9, a crash) comes back with the next command.
        if let Err(e) = crate::dns::revive(&roots) {
            eprintln!("netpath: warning: {}", one_line(&e));
        }
        // The cluster agent runs exactly while the config names a store.
        if let Err(e) = crate::cluster::process::ensure(&roots) {
            eprintln!("netpath: warning: {}", one_line(&e));
        }
    }
    match cli.command {
        Command::Network(cmd) => network_command(roots, cmd),
        Command::Run(args) => run(roots, args),
        Command::Exec { name, command } => {
            let (sandbox, state) = {
                let (_store, state) = Store::open(&roots)?;
                (state.find_sandbox(&name)?.clone(), state)
            };
            Ok(sandbox::exit_code(sandbox::run_foreground(&roots, &state, &sandbox, &command)?))
        }
        Command::DnsServe => crate::dns::server::serve(roots),
        Command::Agent => crate::cluster::process::serve(roots, network::remote::datapath_sink, evict),
        Command::DockerPlugin { socket } => {
            crate::docker_plugin::server::serve(roots, &crate::docker_plugin::server::socket_path(&socket))?;
            Ok(0)
        }
        Command::Ps(args) => {
            let (_store, state) = Store::open(&roots)?;
            print_ps(&state, &args)?;
            Ok(0)
        }
        Command::Rm { force, names } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            // Each argument on its own, as Docker: the sandboxes that exist
            // go even when another argument names nothing, which is
            // reported in Docker's words (non-zero exit). `rm -f` also
            // takes what a lost record left on disk under a name.
            let (targets, mut missing) = resolve_each(&names, |q| state.find_sandbox(q).map(|s| s.name.clone()));
            let mut kept = Vec::new();
            for (query, e) in names.iter().filter(|q| state.find_sandbox(q).is_err()).zip(missing.drain(..)) {
                if force && sandbox::remove_orphan(&host, query)? {
                    println!("{query}");
                } else {
                    kept.push(e);
                }
            }
            let missing = kept;
            let mut teardown = Teardown::new();
            for (given, name) in &targets {
                // Gone already: it had joined an earlier one's namespaces,
                // and `-f` removed it with them.
                if !state.sandboxes.contains_key(name) {
                    println!("{given}");
                    continue;
                }
                let removed = sandbox::remove(&host, &store, &mut state, name, force);
                if removed.is_ok() {
                    println!("{given}");
                }
                teardown.step(format!("removing {given}"), removed);
            }
            store.save(&state)?;
            with_misses(teardown.finish(), missing).map(|()| 0)
        }
        Command::Port { name, port, docker_host } => {
            let (_store, state) = Store::open(&roots)?;
            let filter = port.as_deref().map(publish::parse_filter).transpose()?;
            let (shown, lines) = match state.find_sandbox(&name) {
                Ok(sandbox) => (sandbox.name.clone(), publish::describe(&sandbox.published, filter)),
                // Not a sandbox: perhaps a Docker container on a netpath network.
                Err(not_found) => match crate::docker_plugin::engine_api::container(&docker_host, &name) {
                    Ok(c) => {
                        let lines = crate::docker_plugin::handlers::describe_ports(&state, &c.endpoint_ids, filter);
                        (c.name, lines)
                    }
                    Err(_) => return Err(not_found),
                },
            };
            if lines.is_empty() {
                if let Some(p) = port {
                    anyhow::bail!("no public port '{p}' published for {shown}");
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
        Command::System(SystemCommand::Upgrade) => {
            let host = Host::open(roots)?;
            // Held so that no other command loads or changes pins meanwhile.
            let (_store, _state) = Store::open(&host.roots)?;
            println!("{}", system::upgrade(&host)?);
            Ok(0)
        }
        Command::Inspect { format, kind, names } => {
            let template = format.as_deref().map(Template::parse).transpose()?;
            let (_store, state) = Store::open(&roots)?;
            let docs = names.iter().map(|n| inspect_object(&state, n, kind)).collect::<Result<Vec<_>>>()?;
            print_documents(&docs, template.as_ref())?;
            Ok(0)
        }
        Command::Info { format } => {
            let template = format.as_deref().map(Template::parse).transpose()?;
            let (_store, state) = Store::open(&roots)?;
            let doc = crate::info::document(&roots, &state);
            match template {
                Some(t) => println!("{}", t.render(&doc)?),
                None => print!("{}", crate::info::render(&doc)),
            }
            Ok(0)
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "netpath", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => {
            write_man_pages(&dir)?;
            Ok(0)
        }
    }
}

/// `(argument, stored name)` of each query that names something, each
/// thing once, and the lookup error of each that does not.
fn resolve_each(
    queries: &[String],
    find: impl Fn(&str) -> Result<String>,
) -> (Vec<(String, String)>, Vec<anyhow::Error>) {
    let (mut found, mut missing): (Vec<(String, String)>, Vec<anyhow::Error>) = (Vec::new(), Vec::new());
    for q in queries {
        match find(q) {
            Ok(name) if found.iter().any(|(_, n)| *n == name) => {}
            Ok(name) => found.push((q.clone(), name)),
            Err(e) => missing.push(e),
        }
    }
    (found, missing)
}

/// The outcome of a removal over several arguments: every miss is printed
/// on its own line, as Docker does, and the command fails when anything
/// was missing or failed (the last miss becomes the error when nothing
/// else failed, so a single miss prints exactly Docker's line).
fn with_misses(result: Result<()>, mut missing: Vec<anyhow::Error>) -> Result<()> {
    let last = if result.is_ok() { missing.pop() } else { None };
    for e in &missing {
        eprintln!("{}", error_line(e));
    }
    match (result, last) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}

/// `inspect`'s document for `query`: a sandbox, else a network (as
/// `docker inspect` tries containers first), unless `kind` says which.
fn inspect_object(state: &State, query: &str, kind: Option<ObjectType>) -> Result<serde_json::Value> {
    let as_sandbox = || state.find_sandbox(query).map(|s| crate::inspect::document(state, s));
    let as_network = || state.find_network(query).map(|n| network::inspect::document(state, n));
    match kind {
        Some(ObjectType::Container) => as_sandbox(),
        Some(ObjectType::Network) => as_network(),
        None => {
            let sandbox = as_sandbox();
            // An ambiguous sandbox prefix is reported as such; only a miss
            // falls through to networks.
            let missed = sandbox
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<LookupError>())
                .is_some_and(|e| matches!(e, LookupError::NoSuch(..)));
            if !missed {
                return sandbox;
            }
            as_network().map_err(|e| {
                if matches!(e.downcast_ref::<LookupError>(), Some(LookupError::NoSuch(..))) {
                    LookupError::NoSuch(Kind::Object, query.to_string()).into()
                } else {
                    e
                }
            })
        }
    }
}

/// JSON documents as Docker prints them: one array, or with a template one
/// line per document.
fn print_documents(docs: &[serde_json::Value], template: Option<&Template>) -> Result<()> {
    match template {
        Some(t) => {
            for d in docs {
                println!("{}", t.render(d)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(docs)?),
    }
    Ok(())
}

/// One man page per (visible) command, from the same definition as `--help`.
pub fn write_man_pages(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("writing man pages into {}", dir.display()))
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
                engine_ipam: false,
            };
            let net = network::create(&host, &store, &mut state, &req)?;
            store.save(&state)?;
            println!("{}", net.id);
        }
        NetworkCommand::Ls(args) => {
            let filters = Filters::parse(&args.filters, format::NETWORK_FILTERS)?;
            let template = args.format.as_deref().map(Format::parse).transpose()?;
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let adopted = network::shared::sync_or_warn(&host, &store, &mut state);
            if network::ensure_default(&host, &store, &mut state)?.is_some() || adopted {
                store.save(&state)?;
            }
            let nets: Vec<_> = state.networks.values().filter(|n| format::network_matches(n, &filters)).collect();
            if args.quiet {
                for n in &nets {
                    println!("{}", if args.no_trunc { &n.id[..] } else { &n.id[..12] });
                }
            } else if let Some(f) = template {
                let rows: Vec<_> = nets.iter().map(|n| format::network_row(n, args.no_trunc)).collect();
                print!("{}", f.render(&format::network_header(), &rows)?);
            } else {
                let width = if args.no_trunc { 66 } else { 15 };
                println!("{:<width$}{:<20}{:<10}SCOPE", "NETWORK ID", "NAME", "DRIVER");
                for n in &nets {
                    let id = if args.no_trunc { &n.id[..] } else { &n.id[..12] };
                    println!("{id:<width$}{:<20}{:<10}{}", n.name, n.driver, network::scope(n));
                }
            }
        }
        NetworkCommand::Inspect { format, names } => {
            let template = format.as_deref().map(Template::parse).transpose()?;
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            if names.iter().any(|n| state.find_network(n).is_err())
                && network::shared::sync_or_warn(&host, &store, &mut state)
            {
                store.save(&state)?;
            }
            let docs = names
                .iter()
                .map(|n| Ok(network::inspect::document(&state, state.find_network(n)?)))
                .collect::<Result<Vec<_>>>()?;
            print_documents(&docs, template.as_ref())?;
        }
        NetworkCommand::Rm { names } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            // Each network goes on its own; one that fails (or does not
            // exist) does not keep the others, and every failure is reported.
            let (targets, missing) = resolve_each(&names, |q| state.find_network(q).map(|n| n.name.clone()));
            let mut teardown = Teardown::new();
            for (given, name) in &targets {
                let removed = network::remove(&host, &store, &mut state, name, false);
                store.save(&state)?;
                if removed.is_ok() {
                    println!("{given}");
                }
                teardown.step(format!("removing {given}"), removed);
            }
            teardown.step("resolver", crate::dns::ensure(&host, &state));
            with_misses(teardown.finish(), missing)?;
        }
        NetworkCommand::Connect { aliases, ip, network, sandbox: name } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            network::shared::adopt_if_unknown(&host, &store, &mut state, Some(&network))?;
            let network = state.find_network(&network)?.name.clone();
            let name = state.find_sandbox(&name)?.name.clone();
            sandbox::connect(&host, &mut state, &network, &name, ip.as_deref(), &aliases)?;
            store.save(&state)?;
        }
        NetworkCommand::Attach(a) => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let network = state.find_network(&a.network)?.name.clone();
            let netns_path = external::netns_path(&a.netns)?;
            let ifname = match a.ifname {
                Some(i) => i,
                None => external::free_ifname(&netns_path)?,
            };
            let req = external::AttachRequest {
                name: a.name.unwrap_or_else(|| external::default_name(&a.netns)),
                network,
                ip: a.ip,
                mac: a.mac_address,
                aliases: a.aliases,
                publish: a.publish,
                owner: external::OWNER_ATTACH.into(),
                mover: external::Mover::Netpath { netns: netns_path, ifname },
            };
            let sandbox = external::attach(&host, &store, &mut state, &req)?;
            store.save(&state)?;
            println!("{}", sandbox.id);
        }
        NetworkCommand::Detach { network, sandbox: name, netns } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let network = state.find_network(&network)?.name.clone();
            let name = match (name, netns) {
                (Some(n), _) => state.find_sandbox(&n)?.name.clone(),
                (None, Some(spec)) => {
                    let path = match external::netns_path(&spec) {
                        Ok(p) => p,
                        // A namespace already gone is still found by its path.
                        Err(_) => std::path::PathBuf::from(&spec),
                    };
                    external::find(&state, &network, &path)
                        .with_context(|| format!("no namespace {spec} is attached to network {network}"))?
                        .name
                        .clone()
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let detached = external::detach_from(&host, &store, &mut state, &network, &name);
            store.save(&state)?;
            detached?;
        }
        NetworkCommand::Disconnect { network, sandbox: name } => {
            let host = Host::open(roots)?;
            let (store, mut state) = Store::open(&host.roots)?;
            let network = state.find_network(&network)?.name.clone();
            let name = state.find_sandbox(&name)?.name.clone();
            sandbox::disconnect(&host, &mut state, &network, &name)?;
            store.save(&state)?;
        }
    }
    Ok(0)
}

/// Turns the sandboxes and networks `run` refers to (`--network NET`,
/// `--network container:SANDBOX`, `--link SANDBOX[:ALIAS]`) from names, IDs
/// or prefixes into stored names. A link's alias stays what was typed.
fn resolve_run_references(state: &State, req: &mut RunRequest) -> Result<()> {
    if let Some(mode) = &mut req.network {
        if let Some(owner) = mode.strip_prefix("container:") {
            *mode = format!("container:{}", state.find_sandbox(owner)?.name);
        } else if !["host", "none", DEFAULT_NETWORK_NAME].contains(&mode.as_str()) {
            *mode = state.find_network(mode)?.name.clone();
        }
    }
    for link in &mut req.links {
        let (target, alias) = link.split_once(':').unwrap_or((link.as_str(), link.as_str()));
        let name = &state.find_sandbox(target).with_context(|| format!("could not link to {target}"))?.name;
        *link = format!("{name}:{alias}");
    }
    Ok(())
}

fn run(roots: Roots, a: RunArgs) -> Result<i32> {
    let mut req = RunRequest {
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
        network::shared::adopt_if_unknown(&host, &store, &mut state, req.network.as_deref())?;
        resolve_run_references(&state, &mut req)?;
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

fn print_ps(state: &State, args: &PsArgs) -> Result<()> {
    let filters = Filters::parse(&args.filters, format::SANDBOX_FILTERS)?;
    let template = args.format.as_deref().map(Format::parse).transpose()?;
    let shown: Vec<_> = state.sandboxes.values().filter(|s| format::sandbox_matches(state, s, &filters)).collect();
    if args.quiet {
        for s in &shown {
            println!("{}", if args.no_trunc { &s.id[..] } else { &s.id[..12] });
        }
        return Ok(());
    }
    if let Some(f) = template {
        let rows: Vec<_> = shown.iter().map(|s| format::sandbox_row(s, args.no_trunc)).collect();
        print!("{}", f.render(&format::sandbox_header(), &rows)?);
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    let width = if args.no_trunc { 66 } else { 14 };
    println!("{:<width$}{:<20}{:<16}{:<18}STATUS", "SANDBOX ID", "NAME", "NETWORK", "IP");
    for s in shown {
        let (net, ip) =
            s.attachments.first().map_or(("-".to_string(), "-".to_string()), |a| (a.network.clone(), a.ip.to_string()));
        let id = if args.no_trunc { &s.id[..] } else { &s.id[..12] };
        println!("{id:<width$}{:<20}{:<16}{:<18}{}", s.name, net, ip, format::sandbox_status(s));
    }
    Ok(())
}

/// The cluster agent's [`crate::cluster::agent::Evict`] (here, above both
/// the cluster and the sandbox code, so neither imports the other): sandbox
/// `ep.name` loses its attachment to overlay network `ep.network`, as
/// `network disconnect` does under the state lock, unless it no longer has
/// that attachment with that address. The address's record in the store
/// belongs to its new holder and stays (see `network::shared::release`).
fn evict(roots: &Roots, ep: &crate::cluster::agent::LocalEndpoint) -> Result<()> {
    let host = Host::open(roots.clone())?;
    let (store, mut state) = Store::open(&host.roots)?;
    let attached = state
        .sandboxes
        .get(&ep.name)
        .is_some_and(|s| s.attachments.iter().any(|a| a.network == ep.network && a.ip == ep.ip));
    if !attached {
        return Ok(());
    }
    let result = sandbox::disconnect(&host, &mut state, &ep.network, &ep.name);
    store.save(&state)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command, hidden ones included, explains
    /// itself in `--help`, and so does every command.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name()).trim().to_string();
            if cmd.get_about().is_none() && cmd.get_long_about().is_none() && path != "netpath" {
                missing.push(format!("{path} (the command itself)"));
            }
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "arguments without help text: {missing:#?}");
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Global options sit under their own heading, after the command's own.
    #[test]
    fn global_options_have_their_own_heading() {
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd.find_subcommand_mut("run").unwrap();
        let help = run.render_help().to_string();
        let own = help.find("--network").unwrap();
        let heading = help.find(&format!("{GLOBAL}:")).expect(&help);
        let global = help.find("--state-dir").unwrap();
        assert!(own < heading && heading < global, "{help}");
        assert!(help.contains("Examples:"), "{help}");
    }

    #[test]
    fn commands_follow_options_with_or_without_a_separator() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap();
        let Command::Exec { name, command } = parse(&["netpath", "exec", "s1", "ip", "-o", "addr"]).command else {
            panic!()
        };
        assert_eq!((name.as_str(), command), ("s1", vec!["ip".to_string(), "-o".into(), "addr".into()]));
        let Command::Exec { command, .. } = parse(&["netpath", "exec", "s1", "--", "ip", "-o"]).command else {
            panic!()
        };
        assert_eq!(command, ["ip", "-o"]);
        let Command::Run(run) = parse(&["netpath", "run", "-d", "--name", "a", "sh", "-c", "exit 7"]).command else {
            panic!()
        };
        assert!(run.detach);
        assert_eq!(run.command, ["sh", "-c", "exit 7"]);
        let Command::Run(run) = parse(&["netpath", "run", "--name", "a", "--", "true"]).command else { panic!() };
        assert_eq!(run.command, ["true"]);
        let Command::Ps(ps) = parse(&["netpath", "ps", "-aq", "-f", "name=x", "--format", "{{.ID}}"]).command else {
            panic!()
        };
        assert!(ps.all && ps.quiet && ps.filters == ["name=x"]);
    }

    #[test]
    fn man_pages_and_completions_generate() {
        let dir = std::env::temp_dir().join(format!("netpath-man-{}", std::process::id()));
        write_man_pages(&dir).unwrap();
        let run = std::fs::read_to_string(dir.join("netpath-run.1")).unwrap();
        assert!(run.contains("network\\-alias") && run.contains("Examples"), "{run}");
        assert!(dir.join("netpath.1").exists() && dir.join("netpath-network-create.1").exists());
        assert!(!dir.join("netpath-dns-serve.1").exists(), "hidden commands get no page");
        std::fs::remove_dir_all(&dir).unwrap();
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "netpath", &mut out);
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains("network-alias") && script.contains("inspect"), "{shell}: {script}");
        }
    }

    #[test]
    fn lookup_errors_print_as_docker_prints_them() {
        let mut state = State::default();
        assert_eq!(error_line(&state.find_sandbox("x").unwrap_err()), "Error: No such container: x");
        let one: crate::state::Sandbox = serde_json::from_value(serde_json::json!({
            "name": "a", "id": "ab01", "created": "", "hostname": "", "netns": "", "uts": "",
            "attachments": [], "pid": null, "command": []
        }))
        .unwrap();
        let mut two = one.clone();
        (two.name, two.id) = ("b".into(), "ab02".into());
        state.sandboxes.insert("a".into(), one);
        state.sandboxes.insert("b".into(), two);
        assert_eq!(
            error_line(&state.find_sandbox("ab").unwrap_err()),
            "Error response from daemon: multiple IDs found with provided prefix: ab"
        );
        let wrapped = state.find_sandbox("zz").context("could not link to zz").unwrap_err();
        assert_eq!(error_line(&wrapped), "netpath: could not link to zz: No such container: zz");
        let find = |q: &str| state.find_sandbox(q).map(|s| s.name.clone());
        let (found, missing) = resolve_each(&["ab02".into(), "b".into(), "a".into(), "zz".into()], find);
        assert_eq!((found.len(), missing.len()), (2, 1), "b and its ID are one sandbox; zz is missing");
    }
}
