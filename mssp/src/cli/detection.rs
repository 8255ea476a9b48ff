//! `mssp detection show|set|clear`: attack detection settings, and the NOC's local
//! overrides of the central policy's.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use mssp_wire::{
    attacks::DetectionView,
    requests::{CustomerRef, DetectionClear, DetectionSet},
};
use serde_json::{Map, Value, json};

use super::{
    operator,
    output::{report, table},
    query,
};
use crate::client::Client;

/// `--customer ID|NAME` or `--default`, exactly one.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// One customer (id or name).
    #[arg(long)]
    customer: Option<CustomerRef>,
    /// Every customer that sets none.
    #[arg(long)]
    default: bool,
}

#[derive(Subcommand)]
pub enum DetectionCommand {
    /// The settings in force per customer, and where they come from.
    Show {
        #[arg(long)]
        customer: Option<CustomerRef>,
        #[arg(long)]
        json: bool,
    },
    /// Set the local layer's detection for a customer (or the default), over the central
    /// policy's. Thresholds are per destination address, per second.
    Set {
        #[command(flatten)]
        which: Which,
        /// off, monitor (record only) or mitigate (install auto rules).
        #[arg(long)]
        mode: String,
        #[arg(long)]
        pps: Option<u64>,
        #[arg(long)]
        bps: Option<u64>,
        #[arg(long)]
        udp_pps: Option<u64>,
        #[arg(long)]
        syn_pps: Option<u64>,
        #[arg(long)]
        icmp_pps: Option<u64>,
        #[arg(long)]
        frag_pps: Option<u64>,
        /// Consecutive one-second windows over a threshold before an attack starts.
        #[arg(long)]
        windows: Option<u64>,
        /// Seconds under half of every threshold before an attack ends.
        #[arg(long)]
        hold: Option<u64>,
        /// Seconds an auto mitigation lives unless extended.
        #[arg(long)]
        ttl: Option<u64>,
        #[arg(long)]
        max_rules: Option<u64>,
        #[arg(long)]
        max_sources: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Remove the local layer's settings: the central policy's apply again.
    Clear {
        #[command(flatten)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
}

fn show(v: &[DetectionView]) {
    let mut t = table(&[
        "customer",
        "mode",
        "thresholds",
        "windows",
        "hold",
        "ttl",
        "caps",
        "from",
    ]);
    for d in v {
        let x = &d.detection;
        let thresholds: Vec<String> = x["thresholds"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        t.add_row(vec![
            match &d.name {
                Some(n) => format!("{} ({n})", d.customer),
                None => d.customer.to_string(),
            },
            x["mode"].as_str().unwrap_or("off").to_string(),
            thresholds.join(" "),
            x["windows"].to_string().replace("null", ""),
            x["hold"]
                .as_u64()
                .map(|h| format!("{h}s"))
                .unwrap_or_default(),
            x["ttl"]
                .as_u64()
                .map(|h| format!("{h}s"))
                .unwrap_or_default(),
            match (x["max_rules"].as_u64(), x["max_sources"].as_u64()) {
                (Some(r), Some(s)) => format!("{r} rules, {s} sources"),
                _ => String::new(),
            },
            match &d.who {
                Some(w) => format!("{} ({w})", d.source),
                None => d.source.clone(),
            },
        ]);
    }
    println!("{t}");
}

pub fn run(client: &Client, command: DetectionCommand) -> ExitCode {
    match command {
        DetectionCommand::Show { customer, json } => {
            let path = match customer {
                Some(c) => format!("/v1/detection?customer={}", query(&c.to_string())),
                None => "/v1/detection".into(),
            };
            report(client.get::<Vec<DetectionView>>(&path), json, |v| show(v))
        }
        DetectionCommand::Set {
            which,
            mode,
            pps,
            bps,
            udp_pps,
            syn_pps,
            icmp_pps,
            frag_pps,
            windows,
            hold,
            ttl,
            max_rules,
            max_sources,
            json,
        } => {
            let mut thresholds = Map::new();
            for (k, v) in [
                ("pps", pps),
                ("bps", bps),
                ("udp_pps", udp_pps),
                ("syn_pps", syn_pps),
                ("icmp_pps", icmp_pps),
                ("frag_pps", frag_pps),
            ] {
                if let Some(v) = v {
                    thresholds.insert(k.into(), json!(v));
                }
            }
            let mut d = Map::new();
            d.insert("mode".into(), json!(mode));
            d.insert("thresholds".into(), Value::Object(thresholds));
            for (k, v) in [
                ("windows", windows),
                ("hold", hold),
                ("ttl", ttl),
                ("max_rules", max_rules),
                ("max_sources", max_sources),
            ] {
                if let Some(v) = v {
                    d.insert(k.into(), json!(v));
                }
            }
            let req = DetectionSet {
                customer: which.customer,
                default: which.default,
                detection: Value::Object(d),
                user: operator(),
            };
            report(
                client.put::<_, Vec<DetectionView>>("/v1/detection", &req),
                json,
                |v| show(v),
            )
        }
        DetectionCommand::Clear { which, json } => {
            let req = DetectionClear {
                customer: which.customer,
                default: which.default,
                user: operator(),
            };
            report(
                client.delete::<_, Vec<DetectionView>>("/v1/detection", &req),
                json,
                |v| show(v),
            )
        }
    }
}
