//! `mssp policy validate|show`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::Subcommand;
use mssp_core::policy::{Capacity, parse_policy};
use mssp_wire::{
    FieldErrorView, exit,
    views::{PolicyValidation, PolicyVersion},
};

use super::output::{json as print_json, report};
use crate::client::Client;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check a policy document without applying it.
    Validate {
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
        PolicyCommand::Validate { file, json } => validate(&file, json),
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
                    "central policy version {} (digest {}, applied {})",
                    v.version,
                    v.digest.as_deref().unwrap_or("-"),
                    v.applied_at.as_deref().unwrap_or("never")
                )
            },
        ),
    }
}

fn validate(file: &Path, json: bool) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mssp policy validate: cannot read {}: {e}", file.display());
            return ExitCode::from(exit::USAGE);
        }
    };
    match parse_policy(&bytes, &Capacity::default()) {
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
