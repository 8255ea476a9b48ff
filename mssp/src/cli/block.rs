//! `mssp block add|del|list`: the NOC's local source entries.

use std::process::ExitCode;

use clap::Subcommand;
use mssp_wire::{
    requests::{BlockAdd, BlockDel},
    views::{BlockRemoved, BlockView},
};

use super::{
    ScopeArgs, operator,
    output::{report, table},
};
use crate::client::Client;

#[derive(Subcommand)]
pub enum BlockCommand {
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

pub fn run(client: &Client, command: BlockCommand) -> ExitCode {
    match command {
        BlockCommand::Add {
            prefix,
            scope,
            action,
            ttl,
            comment,
            json,
        } => {
            let req = BlockAdd {
                prefix,
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
