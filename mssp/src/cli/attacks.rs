//! `mssp attacks list|show`: the attacks this edge detected, and what it did about them.

use std::process::ExitCode;

use clap::Subcommand;
use mssp_wire::{
    attacks::{Attack, AttackList},
    requests::CustomerRef,
};

use super::{
    output::{report, table},
    query,
};
use crate::client::Client;

#[derive(Subcommand)]
pub enum AttacksCommand {
    /// Attacks in progress (with --all, the ended ones kept in the history too).
    List {
        /// One customer (id or name).
        #[arg(long)]
        customer: Option<CustomerRef>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One attack: its timeline, rates, mitigation (as policy rules), fingerprint and
    /// top sources.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn rate(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn when(t: &time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn customer_label(a: &Attack) -> String {
    match &a.customer_name {
        Some(n) => format!("{} ({n})", a.customer),
        None => a.customer.to_string(),
    }
}

fn mitigation_summary(a: &Attack) -> String {
    let live = a.mitigation.iter().filter(|m| m.installed).count();
    let decision = a
        .fingerprint
        .as_ref()
        .map(|f| f.decision.clone())
        .unwrap_or_else(|| "fingerprinting".into());
    if a.mode == "monitor" {
        format!("monitor: would install {} ({decision})", a.mitigation.len())
    } else {
        format!("{live} in force ({decision})")
    }
}

pub fn run(client: &Client, command: AttacksCommand) -> ExitCode {
    match command {
        AttacksCommand::List {
            customer,
            all,
            json,
        } => {
            let mut path = format!("/v1/attacks?all={all}");
            if let Some(c) = customer {
                path.push_str(&format!("&customer={}", query(&c.to_string())));
            }
            report(client.get::<AttackList>(&path), json, |l| {
                if l.attacks.is_empty() {
                    println!(
                        "no attacks{}",
                        if all {
                            " recorded"
                        } else {
                            " in progress (--all for the history)"
                        }
                    );
                    return;
                }
                let mut t = table(&[
                    "id",
                    "customer",
                    "target",
                    "state",
                    "mode",
                    "over",
                    "detected",
                    "peak pps",
                    "peak bps",
                    "dropped",
                    "mitigation",
                ]);
                for a in &l.attacks {
                    t.add_row(vec![
                        a.id.clone(),
                        customer_label(a),
                        a.target.clone(),
                        format!("{:?}", a.state).to_lowercase(),
                        a.mode.clone(),
                        a.metrics.join(","),
                        when(&a.detected_at),
                        rate(a.peak_pps),
                        rate(a.peak_bps),
                        a.dropped_packets.to_string(),
                        mitigation_summary(a),
                    ]);
                }
                println!("{t}");
            })
        }
        AttacksCommand::Show { id, json } => report(
            client.get::<Attack>(&format!("/v1/attacks/{}", query(&id))),
            json,
            |a| {
                println!("attack     {}", a.id);
                println!("customer   {}", customer_label(a));
                println!("target     {}", a.target);
                println!("state      {:?} ({} mode)", a.state, a.mode);
                println!("over       {}", a.metrics.join(", "));
                println!("started    {}", when(&a.started_at));
                println!(
                    "detected   {} ({:.1} s after onset)",
                    when(&a.detected_at),
                    (a.detected_at - a.started_at).as_seconds_f64()
                );
                if let Some(m) = &a.mitigated_at {
                    println!(
                        "mitigated  {} ({:.1} s after onset)",
                        when(m),
                        (*m - a.started_at).as_seconds_f64()
                    );
                }
                if let Some(e) = &a.ended_at {
                    println!("ended      {}", when(e));
                }
                println!(
                    "peak       {} pps, {} bps",
                    rate(a.peak_pps),
                    rate(a.peak_bps)
                );
                println!("dropped    {} packets", a.dropped_packets);
                if let Some(f) = &a.fingerprint {
                    println!("decision   {}", f.decision);
                    println!(
                        "fingerprint {} — coverage {:.1}% of {} attack samples, collateral {} of {} earlier samples",
                        f.matches,
                        100.0 * f.coverage,
                        f.attack_samples,
                        f.collateral
                            .map_or("unknown".into(), |c| format!("{:.1}%", 100.0 * c)),
                        f.baseline_samples
                    );
                }
                if !a.mitigation.is_empty() {
                    let mut t = table(&["kind", "mitigation", "expires", "in force"]);
                    for m in &a.mitigation {
                        let what = match (&m.rule, &m.prefix) {
                            (Some(r), _) => r.to_string(),
                            (None, Some(p)) => {
                                format!("{} {p}", m.action.as_deref().unwrap_or("drop"))
                            }
                            _ => String::new(),
                        };
                        t.add_row(vec![
                            m.kind.clone(),
                            what,
                            when(&m.expires),
                            if m.installed {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                        ]);
                    }
                    println!("{t}");
                }
                if !a.top_sources.is_empty() {
                    let mut t = table(&["top source", "pps (est.)", "share of samples"]);
                    for s in &a.top_sources {
                        t.add_row(vec![
                            s.source.clone(),
                            rate(s.pps),
                            format!("{:.1}%", 100.0 * s.share),
                        ]);
                    }
                    println!("{t}");
                }
            },
        ),
    }
}
