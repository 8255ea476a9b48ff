//! Command-line interface: argument parsing and dispatch. Read verbs print a table, or JSON
//! with `--json`; errors name the bad value and exit with sysexits codes.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::{
    agent::{
        self, RunOptions,
        views::{BlockView, RuleView, StatsView, StatusView},
    },
    client::{Client, ClientError},
    config::Config,
    policy::{Capacity, parse_policy},
};

pub const EXIT_USAGE: u8 = 64;
pub const EXIT_DATAERR: u8 = 65;

const DEFAULT_SOCKET: &str = "/run/mssp/mssp.sock";

#[derive(Parser)]
#[command(
    name = "mssp",
    version,
    about = "Edge packet filter for managed security: agent, NOC CLI, push client"
)]
pub struct Cli {
    /// The agent's Unix socket.
    #[arg(long, global = true, env = "MSSP_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
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
    /// Run every frame of a capture through the real XDP program and say what it decided.
    Simulate {
        /// Policy document (JSON).
        #[arg(long)]
        policy: PathBuf,
        /// Capture file (pcap or pcapng, Ethernet).
        #[arg(long)]
        pcap: PathBuf,
        /// One JSON object per frame.
        #[arg(long)]
        json: bool,
    },
    /// Policy documents.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The NOC's local blocklist (the local layer).
    Block {
        #[command(subcommand)]
        command: BlockCommand,
    },
    /// The NOC's local rules (evaluated before the central ones).
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Interfaces, policy versions, map fill.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Packets and bytes per customer, verdict and reason.
    Stats {
        #[arg(long)]
        customer: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Push a policy document to edges' push APIs (the central controller's side), e.g.
    /// mssp push --policy p.json --cert ctl.crt --key ctl.key --ca edges-ca.crt https://edge1:9443
    Push {
        /// Policy document (JSON); validated here while the uploads start (a refusal cancels them)
        #[arg(long)]
        policy: PathBuf,
        /// This controller's client certificate (PEM), signed by the edges' client_ca.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The CA that signed the edges' certificates (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// Edges at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Per attempt: connect, send, apply and reply (e.g. 60s, 2m).
        #[arg(long, default_value = "120s")]
        timeout: String,
        /// Further attempts for an edge that cannot be reached or answers 5xx.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        #[arg(long)]
        json: bool,
        /// The edges' push API URLs, e.g. https://edge1.example.net:9443
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Benchmarks (run by `cargo xtask bench`).
    #[command(hide = true)]
    Bench {
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        mixes: Vec<String>,
        #[arg(long)]
        rounds: Option<usize>,
        #[arg(long)]
        secs: Option<f64>,
        #[arg(long)]
        skip_control: bool,
    },
    /// Remove everything the agent pinned: filtering stops on every interface.
    Unpin {
        #[arg(long)]
        pin_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy document without applying it.
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The central policy the agent enforces.
    Show {
        /// The whole document, not just its version.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    /// A customer's list.
    #[arg(long)]
    customer: Option<u32>,
    /// The ISP-wide list.
    #[arg(long)]
    global: bool,
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Add (or replace, by id) a local rule, written as in the policy document, e.g.
    /// '{"id":100,"match":{"protocol":"udp","src_ports":["11211"]},"action":"drop"}'.
    Add {
        #[arg(long)]
        customer: u32,
        /// The rule (JSON), or @FILE to read it from a file.
        #[arg(long)]
        rule: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a local rule.
    Del {
        #[arg(long)]
        customer: u32,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        json: bool,
    },
    /// A customer's rules of both layers in evaluation order, with their counters.
    List {
        #[arg(long)]
        customer: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BlockCommand {
    /// Add (or replace) a local entry.
    Add {
        prefix: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long, default_value = "drop", value_parser = ["drop", "allow", "monitor"])]
        action: String,
        /// Remove it after this long (e.g. 10m, 2h, 1d); enforced by the data path itself.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a local entry.
    Del {
        prefix: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Entries of both layers, with provenance and hits.
    List {
        #[arg(long, conflicts_with = "global")]
        customer: Option<u32>,
        #[arg(long)]
        global: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Agent {
            config,
            replace_pins,
        } => run_agent(&config, replace_pins),
        Command::Simulate { policy, pcap, json } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match crate::simulate::run(&policy, &pcap, json, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("mssp simulate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy {
            command: PolicyCommand::Validate { file, json },
        } => validate(&file, json),
        Command::Policy {
            command: PolicyCommand::Show { full, json },
        } => report(
            client.request("GET", &format!("/v1/policy?full={full}"), None),
            |v| {
                if json || full {
                    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                } else {
                    println!(
                        "central policy version {} (digest {}, applied {})",
                        v["version"],
                        v["digest"].as_str().unwrap_or("-"),
                        v["applied_at"].as_str().unwrap_or("never")
                    );
                }
            },
        ),
        Command::Block { command } => block(&client, command),
        Command::Rule { command } => rule(&client, command),
        Command::Status { json } => report(client.request("GET", "/v1/status", None), |v| {
            if json {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            } else if let Ok(s) = serde_json::from_value::<StatusView>(v.clone()) {
                print_status(&s);
            }
        }),
        Command::Stats { customer, json } => {
            let path = match customer {
                Some(c) => format!("/v1/stats?customer={c}"),
                None => "/v1/stats".into(),
            };
            report(client.request("GET", &path, None), |v| {
                if json {
                    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                } else if let Ok(s) = serde_json::from_value::<StatsView>(v.clone()) {
                    print_stats(&s);
                }
            })
        }
        Command::Bench {
            quick,
            out,
            only,
            mixes,
            rounds,
            secs,
            skip_control,
        } => {
            let opts = crate::bench::BenchOpts {
                quick,
                out: out.unwrap_or_else(crate::bench::default_out),
                only,
                mixes,
                rounds,
                secs,
                skip_control,
            };
            match crate::bench::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mssp bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Push {
            policy,
            cert,
            key,
            ca,
            concurrency,
            timeout,
            retries,
            json,
            urls,
        } => {
            let Some(timeout) = humantime::parse_duration(&timeout)
                .ok()
                .filter(|d| !d.is_zero())
            else {
                eprintln!("mssp push: --timeout {timeout:?} is not a duration like 60s or 2m");
                return ExitCode::from(EXIT_USAGE);
            };
            crate::push_client::run(crate::push_client::PushOptions {
                policy,
                cert,
                key,
                ca,
                urls,
                concurrency,
                timeout,
                retries,
                json,
            })
        }
        Command::Unpin { pin_dir } => match crate::pins::remove_all(&pin_dir) {
            Ok(removed) => {
                println!(
                    "removed {} pins under {}; filtering has stopped",
                    removed.len(),
                    pin_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mssp unpin: {}: {e}", pin_dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

fn report(
    r: Result<serde_json::Value, ClientError>,
    print: impl FnOnce(&serde_json::Value),
) -> ExitCode {
    match r {
        Ok(v) => {
            print(&v);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mssp: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn operator() -> Option<String> {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
}

fn block(client: &Client, command: BlockCommand) -> ExitCode {
    match command {
        BlockCommand::Add {
            prefix,
            scope,
            action,
            ttl,
            comment,
            json,
        } => {
            let body = serde_json::json!({
                "prefix": prefix, "customer": scope.customer, "global": scope.global,
                "action": action, "ttl": ttl, "comment": comment, "user": operator(),
            });
            report(client.request("POST", "/v1/blocks", Some(&body)), |v| {
                if json {
                    println!("{v}");
                } else if let Ok(b) = serde_json::from_value::<BlockView>(v.clone()) {
                    println!(
                        "local {} {} in {} is enforced{}",
                        b.action,
                        b.prefix,
                        b.scope,
                        b.expires.map(|e| format!(" until {e}")).unwrap_or_default()
                    );
                }
            })
        }
        BlockCommand::Del {
            prefix,
            scope,
            json,
        } => {
            let body = serde_json::json!({"prefix": prefix, "customer": scope.customer, "global": scope.global});
            report(client.request("DELETE", "/v1/blocks", Some(&body)), |v| {
                if json {
                    println!("{v}");
                } else {
                    println!(
                        "removed local entry {} from {}",
                        v["removed"].as_str().unwrap_or("?"),
                        v["scope"].as_str().unwrap_or("?")
                    );
                }
            })
        }
        BlockCommand::List {
            customer,
            global,
            json,
        } => {
            let path = match (customer, global) {
                (Some(c), _) => format!("/v1/blocks?customer={c}"),
                (None, true) => "/v1/blocks?global=true".into(),
                (None, false) => "/v1/blocks".into(),
            };
            report(client.request("GET", &path, None), |v| {
                if json {
                    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                } else if let Ok(list) = serde_json::from_value::<Vec<BlockView>>(v.clone()) {
                    print_blocks(&list);
                }
            })
        }
    }
}

fn rule(client: &Client, command: RuleCommand) -> ExitCode {
    match command {
        RuleCommand::Add {
            customer,
            rule,
            json,
        } => {
            let text = match rule.strip_prefix('@') {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("mssp rule add: cannot read {path}: {e}");
                        return ExitCode::from(EXIT_USAGE);
                    }
                },
                None => rule,
            };
            let value: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("mssp rule add: --rule is not JSON: {e}");
                    return ExitCode::from(EXIT_DATAERR);
                }
            };
            let body = serde_json::json!({"customer": customer, "rule": value, "user": operator()});
            report(client.request("POST", "/v1/rules", Some(&body)), |v| {
                if json {
                    println!("{v}");
                } else {
                    println!(
                        "local rule {} of customer {customer} is enforced at position {}",
                        v["id"], v["order"]
                    );
                }
            })
        }
        RuleCommand::Del { customer, id, json } => {
            let body = serde_json::json!({"customer": customer, "id": id});
            report(client.request("DELETE", "/v1/rules", Some(&body)), |v| {
                if json {
                    println!("{v}");
                } else {
                    println!("removed local rule {id} of customer {customer}");
                }
            })
        }
        RuleCommand::List { customer, json } => report(
            client.request("GET", &format!("/v1/rules?customer={customer}"), None),
            |v| {
                if json {
                    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
                } else if let Ok(list) = serde_json::from_value::<Vec<RuleView>>(v.clone()) {
                    print_rules(&list);
                }
            },
        ),
    }
}

fn print_rules(list: &[RuleView]) {
    if list.is_empty() {
        println!("no rules");
        return;
    }
    let mut t = table(&[
        "#", "id", "layer", "match", "action", "packets", "limited", "who",
    ]);
    for r in list {
        t.add_row(vec![
            r.order.map_or_else(|| "-".to_string(), |o| o.to_string()),
            r.id.to_string(),
            r.layer.clone(),
            r.rule
                .get("match")
                .map(|m| m.to_string())
                .unwrap_or_else(|| "{}".into()),
            r.rule
                .get("action")
                .map(|a| a.to_string())
                .unwrap_or_default(),
            r.packets.to_string(),
            r.limited_packets.to_string(),
            r.who.clone(),
        ]);
    }
    println!("{t}");
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

fn print_blocks(list: &[BlockView]) {
    if list.is_empty() {
        println!("no entries");
        return;
    }
    let mut t = table(&[
        "list", "prefix", "action", "layer", "enforced", "expires", "hits", "who", "comment",
    ]);
    for b in list {
        t.add_row(vec![
            b.scope.clone(),
            b.prefix.clone(),
            b.action.clone(),
            b.layer.clone(),
            if b.enforced {
                "yes".into()
            } else {
                format!("no: {}", b.note.clone().unwrap_or_default())
            },
            b.expires.clone().unwrap_or_else(|| "-".into()),
            b.hits_packets.to_string(),
            b.who.clone(),
            b.comment.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
}

fn print_status(s: &StatusView) {
    println!(
        "mssp agent {} (pid {}), up {}s, data-plane ABI v{}, pins in {}",
        s.version, s.pid, s.uptime_seconds, s.abi, s.pin_dir
    );
    println!(
        "central policy: version {}{}; local entries: {}; customers: {}",
        s.central.version,
        s.central
            .applied_at
            .as_ref()
            .map(|a| format!(" applied {a}"))
            .unwrap_or_default(),
        s.local_entries,
        s.customers
    );
    if let Some(a) = &s.last_apply {
        println!(
            "last publish: {} ({}) took {:.1} ms, {} customers changed",
            a.at, a.trigger, a.duration_ms, a.customers_changed
        );
    }
    if let Some(e) = &s.last_error {
        println!("last error: {e}");
    }
    let mut t = table(&["interface", "mode", "link", "program", "adopted"]);
    for i in &s.interfaces {
        t.add_row(vec![
            i.name.clone(),
            i.mode.clone(),
            i.link_id.to_string(),
            i.prog_id.to_string(),
            i.adopted.to_string(),
        ]);
    }
    println!("{t}");
    let mut m = table(&["map", "used", "capacity", "fill"]);
    for f in &s.maps {
        m.add_row(vec![
            f.map.clone(),
            f.used.to_string(),
            f.capacity.to_string(),
            format!("{:.1}%", 100.0 * f.used as f64 / f.capacity.max(1) as f64),
        ]);
    }
    println!("{m}");
}

fn print_stats(s: &StatsView) {
    let mut t = table(&["customer", "name", "verdict", "reason", "packets", "bytes"]);
    for c in &s.customers {
        for k in &c.counters {
            t.add_row(vec![
                c.customer.map_or("none".to_string(), |c| c.to_string()),
                c.name.clone().unwrap_or_default(),
                k.verdict.clone(),
                k.reason.clone(),
                k.packets.to_string(),
                k.bytes.to_string(),
            ]);
        }
    }
    println!("{t}");
}

fn validate(file: &Path, json: bool) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mssp policy validate: cannot read {}: {e}", file.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match parse_policy(&bytes, &Capacity::default()) {
        Ok(p) => {
            let entries: usize =
                p.global.len() + p.customers.iter().map(|c| c.sources.len()).sum::<usize>();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "version": p.version, "customers": p.customers.len(), "source_entries": entries})
                );
            } else {
                println!(
                    "{}: valid (version {}, {} customers, {} source entries)",
                    file.display(),
                    p.version,
                    p.customers.len(),
                    entries
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let errors: Vec<_> = e
                    .field_errors()
                    .into_iter()
                    .map(|f| serde_json::json!({"path": f.path, "message": f.message}))
                    .collect();
                println!("{}", serde_json::json!({"valid": false, "errors": errors}));
            } else {
                eprintln!("{}: refused:", file.display());
                for f in e.field_errors() {
                    eprintln!("  {f}");
                }
            }
            ExitCode::from(EXIT_DATAERR)
        }
    }
}

fn run_agent(config: &Path, replace_pins: bool) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mssp agent: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mssp agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = RunOptions {
        config_path: Some(config.to_path_buf()),
        replace_pins,
    };
    let r = rt.block_on(agent::run(cfg, opts, shutdown_signal()));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("mssp agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
