//! Command-line interface: argument parsing and dispatch to the subsystems.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::policy::{Capacity, parse_policy};

/// Exit code for bad input (sysexits EX_USAGE / EX_DATAERR style).
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_DATAERR: u8 = 65;

#[derive(Parser)]
#[command(
    name = "mssp",
    version,
    about = "Edge packet filter for managed security: agent, NOC CLI, push client"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy document without applying it.
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
    }
}

fn validate(file: &PathBuf, json: bool) -> ExitCode {
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
