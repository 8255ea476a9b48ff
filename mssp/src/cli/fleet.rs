//! `mssp controller --config FILE` (the fleet's centre, a systemd service) and `mssp fleet
//! ...`, the NOC's verbs at the centre, on the controller's socket.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use mssp_wire::{
    exit,
    fleet::{
        Decision, DecisionItem, FleetAttacks, FleetBlockAdd, FleetDel, FleetRuleAdd, FleetStatus,
    },
};

use super::{
    operator,
    output::{report, table},
};
use crate::client::Client;

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Write a new signing key pair: DIR/controller.key (the controller's, keep it secret)
    /// and DIR/controller.pub (every edge's `controller_key`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Fleet source entries: enforced on every edge, acknowledged per edge.
    Block {
        #[command(subcommand)]
        command: FleetBlockCommand,
    },
    /// Fleet rules (the policy's rule syntax) for one customer on every edge.
    Rule {
        #[command(subcommand)]
        command: FleetRuleCommand,
    },
    /// Per edge: connected, last seen, fleet version, lag; per decision: acks and missing edges.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Attack reports heard from the edges, newest first.
    Attacks {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum FleetBlockCommand {
    Add {
        prefix: String,
        #[arg(long, conflicts_with = "global")]
        customer: Option<u32>,
        #[arg(long)]
        global: bool,
        /// drop (default), allow or monitor.
        #[arg(long)]
        action: Option<String>,
        /// How long it lives (default 1h; fleet decisions always expire).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Withdraw a decision (block or rule) by its id.
    Del {
        id: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum FleetRuleCommand {
    Add {
        #[arg(long)]
        customer: u32,
        /// The rule as JSON: {"match": {...}, "action": ...} (its id is the fleet's).
        rule: String,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Del {
        id: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

fn item(i: &DecisionItem) -> String {
    match i {
        DecisionItem::Source { prefix, action } => format!("{action} {prefix}"),
        DecisionItem::Rule { rule } => rule.to_string(),
    }
}

fn show_decision(d: &Decision) {
    println!(
        "fleet decision {} v{}: {} for {} until {} ({})",
        d.id,
        d.version,
        if d.removed {
            "withdrawn".into()
        } else {
            item(&d.item)
        },
        d.customer
            .map_or("every customer".into(), |c| format!("customer {c}")),
        d.expires,
        d.reason
    );
}

fn list(client: &Client, json: bool, rules: bool) -> ExitCode {
    report(
        client.get::<Vec<Decision>>("/v1/fleet/decisions"),
        json,
        |v| {
            let mut t = table(&["id", "version", "customer", "item", "expires", "why"]);
            for d in v
                .iter()
                .filter(|d| matches!(d.item, DecisionItem::Rule { .. }) == rules)
            {
                t.add_row(vec![
                    d.id.clone(),
                    d.version.to_string(),
                    d.customer.map_or("all".into(), |c| c.to_string()),
                    item(&d.item),
                    d.expires.to_string(),
                    d.reason.clone(),
                ]);
            }
            println!("{t}");
        },
    )
}

fn del(client: &Client, id: String, json: bool) -> ExitCode {
    report(
        client.delete::<_, Decision>("/v1/fleet/decisions", &FleetDel { id }),
        json,
        show_decision,
    )
}

pub fn run(client: &Client, command: FleetCommand) -> ExitCode {
    match command {
        FleetCommand::Keygen { out } => {
            let (seed, public) = mssp_fleet::sign::keygen();
            let key = out.join("controller.key");
            if key.exists() {
                eprintln!(
                    "mssp fleet keygen: {} exists; not overwriting a signing key",
                    key.display()
                );
                return ExitCode::from(exit::USAGE);
            }
            let r = std::fs::create_dir_all(&out).and_then(|_| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key)?
                    .write_all(format!("{seed}\n").as_bytes())?;
                std::fs::write(out.join("controller.pub"), format!("{public}\n"))
            });
            match r {
                Ok(()) => {
                    println!(
                        "wrote {} (mode 0600) and {}",
                        key.display(),
                        out.join("controller.pub").display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mssp fleet keygen: {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        FleetCommand::Block { command } => match command {
            FleetBlockCommand::Add {
                prefix,
                customer,
                global,
                action,
                ttl,
                comment,
                json,
            } => report(
                client.post::<_, Decision>(
                    "/v1/fleet/blocks",
                    &FleetBlockAdd {
                        prefix,
                        customer,
                        global,
                        action,
                        ttl,
                        comment,
                        user: operator(),
                    },
                ),
                json,
                show_decision,
            ),
            FleetBlockCommand::Del { id, json } => del(client, id, json),
            FleetBlockCommand::List { json } => list(client, json, false),
        },
        FleetCommand::Rule { command } => match command {
            FleetRuleCommand::Add {
                customer,
                rule,
                ttl,
                json,
            } => {
                let rule = match serde_json::from_str(&rule) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("mssp fleet rule add: the rule is not JSON: {e}");
                        return ExitCode::from(exit::USAGE);
                    }
                };
                report(
                    client.post::<_, Decision>(
                        "/v1/fleet/rules",
                        &FleetRuleAdd {
                            customer,
                            rule,
                            ttl,
                            user: operator(),
                        },
                    ),
                    json,
                    show_decision,
                )
            }
            FleetRuleCommand::Del { id, json } => del(client, id, json),
            FleetRuleCommand::List { json } => list(client, json, true),
        },
        FleetCommand::Status { json } => {
            report(client.get::<FleetStatus>("/v1/fleet/status"), json, |s| {
                println!("fleet version {}", s.fleet_version);
                let mut t = table(&["edge", "connected", "last seen", "fleet version", "lag"]);
                for e in &s.edges {
                    t.add_row(vec![
                        e.edge.clone(),
                        if e.connected { "yes" } else { "NO" }.into(),
                        e.last_seen.map_or("never".into(), |t| t.to_string()),
                        e.fleet_version.to_string(),
                        e.lag.to_string(),
                    ]);
                }
                println!("{t}");
                let mut t = table(&[
                    "decision",
                    "version",
                    "item",
                    "acked",
                    "first ack",
                    "last ack",
                    "missing / refused",
                ]);
                for d in &s.decisions {
                    let mut miss: Vec<String> = d.missing.clone();
                    miss.extend(d.refused.iter().map(|(e, why)| format!("{e}: {why}")));
                    t.add_row(vec![
                        d.id.clone(),
                        d.version.to_string(),
                        item(&d.item),
                        format!("{}/{}", d.acked, d.edges),
                        d.first_ack_s.map_or("-".into(), |v| format!("{v:.2} s")),
                        d.last_ack_s.map_or("-".into(), |v| format!("{v:.2} s")),
                        miss.join(", "),
                    ]);
                }
                println!("{t}");
            })
        }
        FleetCommand::Attacks { json } => {
            report(client.get::<FleetAttacks>("/v1/fleet/attacks"), json, |a| {
                let mut t = table(&["edge", "event", "attack", "customer", "target", "peak pps"]);
                for r in &a.reports {
                    t.add_row(vec![
                        r.edge.clone(),
                        r.event.clone(),
                        r.attack.id.clone(),
                        r.attack.customer.to_string(),
                        r.attack.target.clone(),
                        format!("{:.0}", r.attack.peak_pps),
                    ]);
                }
                println!("{t}");
            })
        }
    }
}

/// `mssp controller --config FILE`.
pub fn controller(config: &std::path::Path) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cfg = match mssp_controller::config::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mssp controller: invalid configuration: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mssp controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(mssp_controller::run(cfg, super::agent::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("mssp controller: {e}");
            ExitCode::from(exit::UNAVAILABLE)
        }
    }
}
