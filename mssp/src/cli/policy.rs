//! `mssp policy validate|show`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;
use mssp_core::policy::{Capacity, parse_policy};
use mssp_wire::{
    FieldErrorView, exit,
    views::{PolicyCheck, PolicyValidation, PolicyVersion},
};

use super::output::{json as print_json, report};
use crate::client::Client;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check a policy document without applying it: offline, with the map sizes of an agent
    /// config (--config), or against the running agent itself (--agent: its capacities, its
    /// version, and its other layers' rules counted in).
    Validate {
        file: PathBuf,
        /// Use the capacities of this agent config (default: the default map sizes).
        #[arg(long, conflicts_with = "agent")]
        config: Option<PathBuf>,
        /// Ask the running agent (through --socket).
        #[arg(long)]
        agent: bool,
        #[arg(long)]
        json: bool,
    },
    /// What a document would change against the central policy the agent enforces.
    Diff {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Lower the central layer's version (after a push of a version nothing can exceed):
    /// the controller's next push must then be above it.
    ResetVersion {
        #[arg(long)]
        to: u64,
        /// Confirm: the version in force is lowered, the policy itself is unchanged.
        #[arg(long)]
        yes: bool,
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

pub fn run(client: &Client, command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Validate {
            file,
            config,
            agent: false,
            json,
        } => {
            let cap = match config {
                Some(c) => match mssp_agent::config::Config::load(&c) {
                    Ok(cfg) => cfg.policy_capacity(),
                    Err(e) => {
                        eprintln!("mssp policy validate: {e}");
                        return ExitCode::from(exit::USAGE);
                    }
                },
                None => Capacity::default(),
            };
            validate(&file, &cap, json)
        }
        PolicyCommand::Validate {
            file,
            agent: true,
            json,
            ..
        } => match std::fs::read(&file) {
            Ok(bytes) => {
                let r =
                    client.call_raw::<PolicyCheck>(hyper::Method::POST, "/v1/policy/check", bytes);
                match r {
                    Ok(c) if json => {
                        print_json(&c);
                        ExitCode::from(if c.valid { exit::OK } else { exit::DATAERR })
                    }
                    Ok(c) => print_check(&file, &c),
                    Err(e) => super::output::fail(&e, json),
                }
            }
            Err(e) => {
                eprintln!("mssp policy validate: cannot read {}: {e}", file.display());
                ExitCode::from(exit::USAGE)
            }
        },
        PolicyCommand::Diff { file, json } => diff(client, &file, json),
        PolicyCommand::ResetVersion { to, yes, json } => {
            if !yes {
                eprintln!(
                    "mssp policy reset-version: this lowers the version of the central policy in force to {to} \
                     (the policy itself stays as it is), so the controller can push again; \
                     run it again with --yes to do it"
                );
                return ExitCode::from(exit::USAGE);
            }
            let req = mssp_wire::requests::ResetVersion {
                to,
                confirm: true,
                user: super::operator(),
            };
            report(
                client.post::<_, mssp_wire::views::VersionReset>("/v1/policy/reset-version", &req),
                json,
                |r| println!("central policy version {} -> {}", r.from, r.to),
            )
        }
        PolicyCommand::Show { full, json } => report(
            client.get::<PolicyVersion>(&format!("/v1/policy?full={full}")),
            json || full,
            |v| {
                println!(
                    "central policy version {} (digest {}, applied {}{})",
                    v.version,
                    v.digest.as_deref().unwrap_or("-"),
                    v.applied_at.as_deref().unwrap_or("never"),
                    v.source
                        .as_ref()
                        .map(|s| format!(", {s}"))
                        .unwrap_or_default()
                );
                for l in &v.layers {
                    println!(
                        "{} layer version {}: {} entries, {} rules",
                        l.layer, l.version, l.entries, l.rules
                    );
                }
            },
        ),
    }
}

/// What the agent says of a document: valid or not, and what it would change.
fn print_check(file: &Path, c: &PolicyCheck) -> ExitCode {
    if c.valid {
        println!("{}: the agent would apply it", file.display());
    } else {
        eprintln!("{}: the agent would refuse it:", file.display());
        for e in &c.errors {
            if e.path.is_empty() {
                eprintln!("  {}", e.message);
            } else {
                eprintln!("  {}: {}", e.path, e.message);
            }
        }
    }
    if let Some(d) = &c.diff {
        print_diff(d);
    }
    ExitCode::from(if c.valid { exit::OK } else { exit::DATAERR })
}

pub fn print_diff(d: &mssp_wire::views::PolicyDiff) {
    println!(
        "central policy version {} -> {}",
        d.from_version, d.to_version
    );
    if !d.infrastructure_added.is_empty() || !d.infrastructure_removed.is_empty() {
        println!(
            "  infrastructure: +{:?} -{:?}",
            d.infrastructure_added, d.infrastructure_removed
        );
    }
    if d.global_added + d.global_removed + d.global_changed > 0 {
        println!(
            "  global sources: {} added, {} removed, {} changed",
            d.global_added, d.global_removed, d.global_changed
        );
    }
    if !d.customers_added.is_empty() {
        println!("  customers added: {:?}", d.customers_added);
    }
    if !d.customers_removed.is_empty() {
        println!("  customers removed: {:?}", d.customers_removed);
    }
    for c in &d.customers_changed {
        println!(
            "  customer {}{}: prefixes +{} -{}, sources +{} -{} ~{}, rules +{} -{} ~{}{}",
            c.id,
            c.name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            c.prefixes_added.len(),
            c.prefixes_removed.len(),
            c.sources_added,
            c.sources_removed,
            c.sources_changed,
            c.rules_added,
            c.rules_removed,
            c.rules_changed,
            if c.limits_changed {
                ", limits changed"
            } else {
                ""
            }
        );
    }
    if d.customers_added.is_empty()
        && d.customers_removed.is_empty()
        && d.customers_changed.is_empty()
        && d.global_added + d.global_removed + d.global_changed == 0
        && d.infrastructure_added.is_empty()
        && d.infrastructure_removed.is_empty()
    {
        println!("  no change in what is enforced");
    }
}

/// `mssp policy diff FILE`: the central policy in force (fetched whole) against a document.
fn diff(client: &Client, file: &Path, json: bool) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mssp policy diff: cannot read {}: {e}", file.display());
            return ExitCode::from(exit::USAGE);
        }
    };
    let new = match parse_policy(&bytes, &Capacity::default()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mssp policy diff: {}: {e}", file.display());
            return ExitCode::from(exit::DATAERR);
        }
    };
    let held = match client.get::<PolicyVersion>("/v1/policy?full=true") {
        Ok(v) => v,
        Err(e) => return super::output::fail(&e, json),
    };
    let old = match held.policy.map(mssp_core::policy::doc_from_value) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("mssp policy diff: the agent's policy does not parse here: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
        None => mssp_core::policy::Policy::empty(),
    };
    let d = mssp_agent::diff::diff(&old, &new);
    if json {
        print_json(&d);
    } else {
        print_diff(&d);
    }
    ExitCode::SUCCESS
}

fn validate(file: &Path, cap: &Capacity, json: bool) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mssp policy validate: cannot read {}: {e}", file.display());
            return ExitCode::from(exit::USAGE);
        }
    };
    match parse_policy(&bytes, cap) {
        Ok(p) => {
            let entries: usize =
                p.global.len() + p.customers.iter().map(|c| c.sources.len()).sum::<usize>();
            if json {
                print_json(&PolicyValidation {
                    valid: true,
                    version: Some(p.version),
                    customers: Some(p.customers.len()),
                    source_entries: Some(entries),
                    errors: Vec::new(),
                });
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
                print_json(&PolicyValidation {
                    valid: false,
                    version: None,
                    customers: None,
                    source_entries: None,
                    errors: e
                        .field_errors()
                        .into_iter()
                        .map(|f| FieldErrorView {
                            path: f.path,
                            value: serde_json::Value::Null,
                            message: f.message,
                        })
                        .collect(),
                });
            } else {
                eprintln!("{}: refused:", file.display());
                for f in e.field_errors() {
                    eprintln!("  {f}");
                }
            }
            ExitCode::from(exit::DATAERR)
        }
    }
}
