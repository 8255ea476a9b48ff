//! The command line: the verbs and their arguments, and dispatch to one module per verb
//! group. Read verbs print a table, or JSON with `--json`; errors name the bad value and exit
//! with sysexits codes (`mssp_wire::exit`).

mod agent;
mod attacks;
mod block;
mod detection;
mod explain;
mod filter;
mod fleet;
mod monitor;
mod output;
mod policy;
mod push;
mod rule;
mod simulate;
mod status;
mod unpin;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use mssp_wire::requests::CustomerRef;

use crate::client::Client;

const DEFAULT_SOCKET: &str = "/run/mssp/mssp.sock";

#[derive(Parser)]
#[command(
    name = "mssp",
    version,
    about = "Edge packet filter for managed security: agent, NOC CLI, push client"
)]
pub struct Cli {
    /// The agent's Unix socket (the CLI does not read the agent's config file).
    #[arg(long, global = true, env = "MSSP_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The fleet controller's Unix socket (for `mssp fleet ...`).
    #[arg(
        long,
        global = true,
        env = "MSSP_CONTROLLER_SOCKET",
        default_value = "/run/mssp/controller.sock"
    )]
    controller_socket: PathBuf,
    /// How long to wait for the agent's answer (e.g. 30s, 2m).
    #[arg(long, global = true, env = "MSSP_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration like 30s or 2m"))
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the systemd service).
    Agent {
        #[arg(long)]
        config: PathBuf,
        /// Replace pins of another mssp ABI or map size, without a gap in filtering.
        #[arg(long)]
        replace_pins: bool,
    },
    /// Run the content-filtering inspector (AF_XDP on the customer interfaces); the agent
    /// starts and restarts it.
    Inspector {
        #[arg(long)]
        config: PathBuf,
    },
    /// Content filtering: blocked names (DNS, TLS SNI, HTTP Host) per customer and global.
    Filter {
        #[command(subcommand)]
        command: filter::FilterCommand,
    },
    /// Run the fleet controller (the systemd service at the centre).
    Controller {
        #[arg(long)]
        config: PathBuf,
    },
    /// The fleet, at the controller: decisions for every edge, their acks, the edges.
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Run every frame of a capture through the real XDP program and say what it decided
    /// (with a policy file, or --live with the agent's policy in force, every layer).
    Simulate(simulate::SimulateArgs),
    /// What the live data path decides for one packet, and why.
    Explain(explain::ExplainArgs),
    /// Policy documents.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The NOC's local blocklist (the local layer).
    Block {
        #[command(subcommand)]
        command: block::BlockCommand,
    },
    /// The NOC's local rules (evaluated before the central ones).
    Rule {
        #[command(subcommand)]
        command: rule::RuleCommand,
    },
    /// Attacks this edge detected: in progress, or with --all the history.
    Attacks {
        #[command(subcommand)]
        command: attacks::AttacksCommand,
    },
    /// Attack detection settings (thresholds, mode), and the NOC's local overrides.
    Detection {
        #[command(subcommand)]
        command: detection::DetectionCommand,
    },
    /// Sampled packets with their verdict, reason and deciding entry or rule, as they happen.
    Monitor {
        /// One customer (id or name).
        #[arg(long)]
        customer: Option<CustomerRef>,
        /// One verdict (drop, pass) or reason (rule, customer_block, ...).
        #[arg(long)]
        reason: Option<String>,
        /// Content filtering's decisions instead (names inspected on customer interfaces).
        #[arg(long)]
        filtering: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// What flows now: per customer, per destination, and the top sources.
    Top {
        #[arg(long)]
        customer: Option<CustomerRef>,
        #[arg(long)]
        json: bool,
    },
    /// Interfaces, policy versions, map fill.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Packets and bytes per customer, verdict and reason.
    Stats {
        /// One customer (id or name).
        #[arg(long)]
        customer: Option<CustomerRef>,
        #[arg(long)]
        json: bool,
    },
    /// Push a policy document to edges' push APIs (the central controller's side), e.g.
    /// mssp push --policy p.json --cert ctl.crt --key ctl.key --ca edges-ca.crt https://edge1:9443
    Push(push::PushArgs),
    /// Re-read the agent's config, policy file and push certificates: applies wholly or
    /// changes nothing, and says which (what `systemctl reload mssp` runs).
    Reload {
        /// Take the socket from this agent config instead of --socket.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write the man page and shell completions into a directory (packaging).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
    /// Remove everything the agent pinned: filtering stops on every interface.
    Unpin {
        #[arg(long)]
        pin_dir: PathBuf,
        /// Even while an agent runs with these pins (its filter runs on until it stops).
        #[arg(long)]
        force: bool,
    },
}

/// `--customer ID|NAME` or `--global`, exactly one.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// A customer's list (its id or its name).
    #[arg(long)]
    pub customer: Option<CustomerRef>,
    /// The ISP-wide list.
    #[arg(long)]
    pub global: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Agent { .. } | Command::Controller { .. } | Command::Inspector { .. }
    ) {
        // A CLI whose output is cut short (`mssp status | head -1`) ends quietly, as Unix
        // tools do. Not the agent: a client hanging up on its socket must not kill it.
        // SAFETY: restoring the default disposition of one signal, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let client = Client::new(&cli.socket, cli.timeout);
    match cli.command {
        Command::Agent {
            config,
            replace_pins,
        } => agent::run(&config, replace_pins),
        Command::Controller { config } => fleet::controller(&config),
        Command::Inspector { config } => filter::inspector(&config),
        Command::Filter { command } => filter::run(&client, command),
        Command::Fleet { command } => {
            fleet::run(&Client::new(&cli.controller_socket, cli.timeout), command)
        }
        Command::Simulate(args) => simulate::run(&client, args),
        Command::Explain(args) => explain::run(&client, args),
        Command::Policy { command } => policy::run(&client, command),
        Command::Block { command } => block::run(&client, command),
        Command::Rule { command } => rule::run(&client, command),
        Command::Attacks { command } => attacks::run(&client, command),
        Command::Detection { command } => detection::run(&client, command),
        Command::Monitor {
            customer,
            reason,
            filtering: true,
            json,
        } => match customer {
            Some(CustomerRef::Name(n)) => {
                eprintln!("mssp monitor --filtering: give the customer's id, not {n:?}");
                ExitCode::from(mssp_wire::exit::USAGE)
            }
            Some(CustomerRef::Id(id)) => monitor::filtering(&client, Some(id), json),
            None => {
                let _ = reason;
                monitor::filtering(&client, None, json)
            }
        },
        Command::Monitor {
            customer,
            reason,
            filtering: false,
            json,
        } => monitor::monitor(&client, customer, reason, json),
        Command::Top { customer, json } => monitor::top(&client, customer, json),
        Command::Status { json } => status::status(&client, json),
        Command::Stats { customer, json } => status::stats(&client, customer, json),
        Command::Push(args) => push::run(args),
        Command::Unpin { pin_dir, force } => unpin::run(&pin_dir, force),
        Command::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mssp generate-assets: {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Command::Reload { config, json } => {
            let client = match config {
                Some(path) => match mssp_agent::config::Config::load(&path) {
                    Ok(c) => Client::new(&c.socket, cli.timeout),
                    Err(e) => {
                        eprintln!("mssp reload: {e}");
                        return ExitCode::from(mssp_wire::exit::USAGE);
                    }
                },
                None => client,
            };
            output::report(
                client.post::<_, mssp_wire::views::ReloadResult>("/v1/reload", &()),
                json,
                |r| println!("reloaded: {}", r.message),
            )
        }
    }
}

/// The man page (`mssp.1`) and bash, zsh and fish completions.
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::{Shell, generate};
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(&mut std::fs::File::create(dir.join("mssp.1"))?)?;
    for (shell, name) in [
        (Shell::Bash, "mssp.bash"),
        (Shell::Zsh, "_mssp"),
        (Shell::Fish, "mssp.fish"),
    ] {
        let mut c = cmd.clone();
        generate(
            shell,
            &mut c,
            "mssp",
            &mut std::fs::File::create(dir.join(name))?,
        );
    }
    Ok(())
}

/// A query-string value, percent-encoded.
pub fn query(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The operator as the CLI knows them, passed along for the audit trail.
pub fn operator() -> Option<String> {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
}
