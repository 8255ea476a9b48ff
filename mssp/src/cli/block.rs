//! `mssp block add|del|list`: the NOC's local source entries.

use std::process::ExitCode;

use clap::Subcommand;
use mssp_wire::{
    requests::{BlockAdd, BlockBatch, BlockDel, BlockFlush, CustomerRef},
    views::{BlockBatchResult, BlockFlushed, BlockRemoved, BlockView},
};

use super::{
    ScopeArgs, operator,
    output::{report, table},
};
use crate::client::Client;

#[derive(Subcommand)]
pub enum BlockCommand {
    /// Add (or replace) a local entry; with -f, every prefix of a file (one per line, `#`
    /// starts a comment; `-` reads stdin), all or nothing.
    Add {
        /// The prefix (a bare address is a host prefix).
        #[arg(required_unless_present = "file")]
        prefix: Option<String>,
        #[arg(short = 'f', long, conflicts_with = "prefix")]
        file: Option<String>,
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
    /// Every local entry of one list (all or nothing).
    Flush {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The layer to flush: only the local layer is the CLI's.
        #[arg(long, default_value = "local", value_parser = ["local"])]
        layer: String,
        #[arg(long)]
        json: bool,
    },
    /// Which entries of which layers and lists cover an address.
    Find {
        ip: String,
        #[arg(long)]
        json: bool,
    },
    /// Entries of every layer, with provenance and hits.
    List {
        /// A customer (id or name).
        #[arg(long, conflicts_with = "global")]
        customer: Option<CustomerRef>,
        #[arg(long)]
        global: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(client: &Client, command: BlockCommand) -> ExitCode {
    match command {
        BlockCommand::Add {
            prefix: None,
            file: Some(file),
            scope,
            action,
            ttl,
            comment,
            json,
        } => {
            let text = if file == "-" {
                let mut t = String::new();
                match std::io::Read::read_to_string(&mut std::io::stdin(), &mut t) {
                    Ok(_) => t,
                    Err(e) => {
                        eprintln!("mssp block add -f -: cannot read stdin: {e}");
                        return ExitCode::from(mssp_wire::exit::USAGE);
                    }
                }
            } else {
                match std::fs::read_to_string(&file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("mssp block add -f {file}: cannot read: {e}");
                        return ExitCode::from(mssp_wire::exit::USAGE);
                    }
                }
            };
            let entries: Vec<BlockAdd> = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(|p| BlockAdd {
                    prefix: p.to_string(),
                    customer: scope.customer.clone(),
                    global: scope.global,
                    action: Some(action.clone()),
                    ttl: ttl.clone(),
                    comment: comment.clone(),
                    user: operator(),
                })
                .collect();
            report(
                client.post::<_, BlockBatchResult>("/v1/blocks/batch", &BlockBatch { entries }),
                json,
                |r| println!("{} local entries added and enforced", r.added),
            )
        }
        BlockCommand::Add {
            prefix,
            scope,
            action,
            ttl,
            comment,
            json,
            ..
        } => {
            let req = BlockAdd {
                prefix: prefix.unwrap_or_default(),
                customer: scope.customer,
                global: scope.global,
                action: Some(action),
                ttl,
                comment,
                user: operator(),
            };
            report(client.post::<_, BlockView>("/v1/blocks", &req), json, |b| {
                println!(
                    "local {} {} in {} is enforced{}",
                    b.action,
                    b.prefix,
                    b.scope,
                    b.expires
                        .as_ref()
                        .map(|e| format!(" until {e}"))
                        .unwrap_or_default()
                );
            })
        }
        BlockCommand::Del {
            prefix,
            scope,
            json,
        } => {
            let req = BlockDel {
                prefix,
                customer: scope.customer,
                global: scope.global,
            };
            report(
                client.delete::<_, BlockRemoved>("/v1/blocks", &req),
                json,
                |r| println!("removed local entry {} from {}", r.removed, r.scope),
            )
        }
        BlockCommand::Flush { scope, json, .. } => report(
            client.post::<_, BlockFlushed>(
                "/v1/blocks/flush",
                &BlockFlush {
                    customer: scope.customer,
                    global: scope.global,
                    user: operator(),
                },
            ),
            json,
            |r| println!("removed {} local entries from {}", r.removed, r.scope),
        ),
        BlockCommand::Find { ip, json } => report(
            client.get::<Vec<BlockView>>(&format!("/v1/blocks/find?ip={}", super::query(&ip))),
            json,
            |list| print_blocks(list),
        ),
        BlockCommand::List {
            customer,
            global,
            json,
        } => {
            let path = match (customer, global) {
                (Some(c), _) => format!("/v1/blocks?customer={}", super::query(&c.to_string())),
                (None, true) => "/v1/blocks?global=true".into(),
                (None, false) => "/v1/blocks".into(),
            };
            report(client.get::<Vec<BlockView>>(&path), json, |list| {
                print_blocks(list)
            })
        }
    }
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
