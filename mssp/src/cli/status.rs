//! `mssp status` and `mssp stats`.

use std::process::ExitCode;

use mssp_wire::views::{StatsView, StatusView};

use super::output::{report, table};
use crate::client::Client;

pub fn status(client: &Client, json: bool) -> ExitCode {
    report(client.get::<StatusView>("/v1/status"), json, print_status)
}

pub fn stats(
    client: &Client,
    customer: Option<mssp_wire::requests::CustomerRef>,
    json: bool,
) -> ExitCode {
    let path = match customer {
        Some(c) => format!("/v1/stats?customer={}", super::query(&c.to_string())),
        None => "/v1/stats".into(),
    };
    report(client.get::<StatsView>(&path), json, print_stats)
}

fn print_status(s: &StatusView) {
    println!(
        "mssp agent {} (pid {}), up {}s, data-plane ABI v{}, pins in {}",
        s.version, s.pid, s.uptime_seconds, s.abi, s.pin_dir
    );
    println!(
        "central policy: version {}{}; local entries: {}; customers: {}",
        s.central.version,
        s.central
            .applied_at
            .as_ref()
            .map(|a| format!(" applied {a}"))
            .unwrap_or_default(),
        s.local_entries,
        s.customers
    );
    if let Some(a) = &s.last_apply {
        println!(
            "last publish: {} ({}) took {:.1} ms, {} customers changed",
            a.at, a.trigger, a.duration_ms, a.customers_changed
        );
    }
    if let Some(f) = &s.fleet {
        println!(
            "fleet: edge {} on {} ({}), fleet version {}, {} decisions in force, {} refused as unsigned",
            f.edge,
            f.nats_url,
            if f.connected {
                "connected"
            } else {
                "NOT connected"
            },
            f.fleet_version,
            f.decisions,
            f.bad_signature
        );
    }
    if let Some(f) = &s.filtering {
        println!(
            "filtering: on {}; inspector {}{}; {}",
            f.interfaces.join(", "),
            if f.inspector_running {
                "running"
            } else {
                "DOWN"
            },
            f.inspector_pid
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default(),
            if f.fail_open {
                "FAIL-OPEN: traffic passes uninspected".to_string()
            } else {
                format!(
                    "enforcing ({} inspected, {} blocked, {} allowed)",
                    f.inspected, f.blocked, f.allowed
                )
            }
        );
        for (i, q, m) in &f.sockets {
            println!("  AF_XDP socket {i} queue {q} ({m} mode)");
        }
        if let Some(d) = &f.inject_device {
            println!(
                "  re-injection through {d}; heartbeat {} ms old; {} restarts",
                f.heartbeat_age_ms.unwrap_or(0),
                f.restarts
            );
        }
        if let (false, Some(e)) = (f.inspector_running, &f.last_exit) {
            println!("  last exit: {e}");
        }
    }
    if let Some(e) = &s.last_error {
        println!("last error: {e}");
    }
    if s.enforced {
        println!("enforced: yes (the kernel runs what this agent published, on every interface)");
    } else {
        println!("enforced: NO");
        for d in &s.drift {
            println!("  - {d}");
        }
    }
    let mut t = table(&["interface", "mode", "link", "program", "adopted"]);
    for i in &s.interfaces {
        t.add_row(vec![
            i.name.clone(),
            i.mode.clone(),
            i.link_id.to_string(),
            i.prog_id.to_string(),
            i.adopted.to_string(),
        ]);
    }
    println!("{t}");
    let mut m = table(&["map", "used", "capacity", "fill"]);
    for f in &s.maps {
        m.add_row(vec![
            f.map.clone(),
            f.used.to_string(),
            f.capacity.to_string(),
            format!("{:.1}%", 100.0 * f.used as f64 / f.capacity.max(1) as f64),
        ]);
    }
    println!("{m}");
}

fn print_stats(s: &StatsView) {
    let mut t = table(&["customer", "name", "verdict", "reason", "packets", "bytes"]);
    for c in &s.customers {
        for k in &c.counters {
            t.add_row(vec![
                c.customer.map_or("none".to_string(), |c| c.to_string()),
                c.name.clone().unwrap_or_default(),
                k.verdict.clone(),
                k.reason.clone(),
                k.packets.to_string(),
                k.bytes.to_string(),
            ]);
        }
    }
    println!("{t}");
}
