//! `mssp rule add|del|list`: the NOC's local rules.

use std::process::ExitCode;

use clap::Subcommand;
use mssp_wire::{
    exit,
    requests::{CustomerRef, RuleAdd, RuleDel},
    views::{RuleRemoved, RuleView},
};

use super::{
    operator,
    output::{report, table},
};
use crate::client::Client;

#[derive(Subcommand)]
pub enum RuleCommand {
    /// Add (or replace, by id) a local rule, written as in the policy document, e.g.
    /// '{"id":100,"match":{"protocol":"udp","src_ports":["11211"]},"action":"drop"}'.
    Add {
        /// The customer (id or name).
        #[arg(long)]
        customer: CustomerRef,
        /// The rule (JSON), or @FILE to read it from a file.
        #[arg(long)]
        rule: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a local rule.
    Del {
        /// The customer (id or name).
        #[arg(long)]
        customer: CustomerRef,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        json: bool,
    },
    /// A customer's rules of both layers in evaluation order, with their counters.
    List {
        /// The customer (id or name).
        #[arg(long)]
        customer: CustomerRef,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(client: &Client, command: RuleCommand) -> ExitCode {
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
                        return ExitCode::from(exit::USAGE);
                    }
                },
                None => rule,
            };
            // Parsed strictly here (duplicate keys, arrays for objects, nulls are refused,
            // naming the field): the agent sees only a value.
            let mut de = serde_json::Deserializer::from_str(&text);
            if let Err(e) = serde_path_to_error::deserialize::<
                _,
                mssp_core::policy::rules_doc::RuleDoc,
            >(&mut de)
            {
                let path = e.path().to_string();
                eprintln!("mssp rule add: --rule: rule.{path}: {}", e.into_inner());
                return ExitCode::from(exit::DATAERR);
            }
            let value: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("mssp rule add: --rule is not JSON: {e}");
                    return ExitCode::from(exit::DATAERR);
                }
            };
            let req = RuleAdd {
                customer: customer.clone(),
                rule: value,
                user: operator(),
            };
            report(client.post::<_, RuleView>("/v1/rules", &req), json, |r| {
                println!(
                    "local rule {} of customer {customer} is enforced at position {}",
                    r.id,
                    r.order.map_or_else(|| "-".to_string(), |o| o.to_string())
                );
            })
        }
        RuleCommand::Del { customer, id, json } => report(
            client.delete::<_, RuleRemoved>(
                "/v1/rules",
                &RuleDel {
                    customer: customer.clone(),
                    id,
                },
            ),
            json,
            |_| println!("removed local rule {id} of customer {customer}"),
        ),
        RuleCommand::List { customer, json } => report(
            client.get::<Vec<RuleView>>(&format!(
                "/v1/rules?customer={}",
                super::query(&customer.to_string())
            )),
            json,
            |list| print_rules(list),
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
