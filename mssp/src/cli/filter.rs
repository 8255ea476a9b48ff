//! `mssp filter add|del|list|test|stats`: content filtering (DNS names, TLS SNI, HTTP Host)
//! per customer and ISP-wide, and `mssp inspector`, the AF_XDP process the agent runs.

use std::{path::Path, process::ExitCode, sync::Arc};

use clap::Subcommand;
use mssp_wire::requests::{CustomerRef, FilterEdit};
use serde_json::Value;

use super::{ScopeArgs, operator, output::report, query};
use crate::client::Client;

#[derive(Subcommand)]
pub enum FilterCommand {
    /// Block names (and every name under them) for a customer's users, or for everyone
    /// (--global), in the local layer on this edge.
    Add {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove names from the local layer (the central policy's lists are the centre's).
    Del {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The lists in force: per customer, and the global one.
    List {
        #[arg(long)]
        customer: Option<CustomerRef>,
        #[arg(long)]
        global: bool,
        #[arg(long)]
        json: bool,
    },
    /// Which rule decides NAME for a customer's users, and why.
    Test {
        #[arg(long)]
        customer: Option<CustomerRef>,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The inspector: sockets, fail-open state, counters per customer, top blocked names,
    /// latest decisions.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

fn edit(scope: ScopeArgs, names: Vec<String>) -> FilterEdit {
    FilterEdit {
        customer: scope.customer,
        global: scope.global,
        names,
        user: operator(),
    }
}

fn print_list(v: &Value) {
    let show = |who: &str, f: &Value, local: &Value| {
        if f.is_null() {
            println!("{who}: no filtering");
            return;
        }
        println!(
            "{who}: {} names blocked, action {}, QUIC {}",
            f["names"],
            f["action"].as_str().unwrap_or("?"),
            f["quic"].as_str().unwrap_or("?")
        );
        for n in f["block_domains"].as_array().into_iter().flatten().take(50) {
            let name = n.as_str().unwrap_or("");
            let l = local
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name))
                .map(|x| format!("  (local, by {})", x["who"].as_str().unwrap_or("?")))
                .unwrap_or_default();
            println!("  {name}{l}");
        }
        if f["names"].as_u64().unwrap_or(0) > 50 {
            println!("  ... (--json lists up to 1000)");
        }
    };
    if !v["global"].is_null() {
        show("global", &v["global"]["filtering"], &v["global"]["local"]);
    }
    for c in v["customers"].as_array().into_iter().flatten() {
        let who = match c["name"].as_str() {
            Some(n) => format!("customer {} ({n})", c["id"]),
            None => format!("customer {}", c["id"]),
        };
        show(&who, &c["filtering"], &c["local"]);
    }
}

pub fn run(client: &Client, cmd: FilterCommand) -> ExitCode {
    match cmd {
        FilterCommand::Add { scope, names, json } => report(
            client.post::<_, Value>("/v1/filter", &edit(scope, names)),
            json,
            print_list,
        ),
        FilterCommand::Del { scope, names, json } => report(
            client.delete::<_, Value>("/v1/filter", &edit(scope, names)),
            json,
            print_list,
        ),
        FilterCommand::List {
            customer,
            global,
            json,
        } => {
            let mut q = String::new();
            if let Some(c) = customer {
                q = format!("?customer={}", query(&c.to_string()));
            } else if global {
                q = "?global=true".into();
            }
            report(
                client.get::<Value>(&format!("/v1/filter{q}")),
                json,
                print_list,
            )
        }
        FilterCommand::Test {
            customer,
            name,
            json,
        } => {
            let mut q = format!("?name={}", query(&name));
            if let Some(c) = customer {
                q.push_str(&format!("&customer={}", query(&c.to_string())));
            }
            report(
                client.get::<Value>(&format!("/v1/filter/test{q}")),
                json,
                |v| {
                    println!(
                        "{}: {}",
                        v["verdict"].as_str().unwrap_or("?").to_uppercase(),
                        v["why"].as_str().unwrap_or("")
                    )
                },
            )
        }
        FilterCommand::Stats { json } => {
            report(client.get::<Value>("/v1/filter/stats"), json, |v| {
                let i = &v["inspector"];
                println!(
                    "inspector: {}{}, {} restarts{}",
                    if i["running"] == true {
                        "running"
                    } else {
                        "DOWN"
                    },
                    i["pid"]
                        .as_u64()
                        .map(|p| format!(" (pid {p})"))
                        .unwrap_or_default(),
                    i["restarts"],
                    if i["fail_open"] == true {
                        "; FAIL-OPEN: traffic passes uninspected"
                    } else {
                        ""
                    }
                );
                let k = &i["kernel"];
                println!(
                    "data path: {} seen, {} steered, {} passed by cached allow, {} dropped by cached block, {} QUIC dropped, {} passed fail-open, {} passed without a socket",
                    k["seen"],
                    k["steered"],
                    k["cache_allow"],
                    k["cache_block"],
                    k["quic_drop"],
                    k["fail_open"],
                    k["no_socket"]
                );
                let r = &v["report"];
                if r.is_null() {
                    return;
                }
                println!("totals: {}", r["totals"]);
                for c in r["customers"].as_array().into_iter().flatten() {
                    println!(
                        "  customer {} {}: inspected {} allowed {} nxdomain {} sinkhole {} dropped {} reset {}",
                        c["id"],
                        c["name"].as_str().unwrap_or(""),
                        c["inspected"],
                        c["allowed"],
                        c["nxdomain"],
                        c["sinkhole"],
                        c["dropped"],
                        c["reset"]
                    );
                }
                for t in r["top_blocked"].as_array().into_iter().flatten().take(10) {
                    println!("  top blocked: {} ({})", t[0].as_str().unwrap_or(""), t[1]);
                }
            })
        }
    }
}

/// `mssp inspector --config FILE`: the AF_XDP inspector (the agent starts it).
pub fn inspector(config: &Path) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cfg = match mssp_agent::config::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mssp inspector: invalid configuration: {e}");
            return ExitCode::from(mssp_wire::exit::USAGE);
        }
    };
    let settings = mssp_filter::Settings {
        interfaces: cfg
            .customer_interfaces()
            .into_iter()
            .map(|i| i.name)
            .collect(),
        maps_dir: mssp_core::pins::Layout::new(&cfg.pin_dir).abi_dir(),
        state_dir: cfg.state_dir.clone(),
        xdp_mode: cfg.filtering.xdp_mode.clone(),
        inject_device: cfg.filtering.inject_device.clone(),
        hold: std::time::Duration::from_millis(cfg.filtering.hold_ms),
    };
    if settings.interfaces.is_empty() {
        eprintln!(
            "mssp inspector: {}: customer_interfaces is empty; nothing to inspect",
            config.display()
        );
        return ExitCode::from(mssp_wire::exit::USAGE);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    STOP.get_or_init(|| stop.clone());
    let r = mssp_filter::Inspector::open(settings).and_then(|i| i.run(stop));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("mssp inspector: {e}");
            ExitCode::FAILURE
        }
    }
}

static STOP: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(s) = STOP.get() {
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
