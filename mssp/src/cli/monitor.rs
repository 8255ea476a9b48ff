//! `mssp monitor` (sampled packets with their decision, as they happen) and `mssp top`
//! (what flows now, per customer, destination and source).

use std::process::ExitCode;

use mssp_wire::{
    attacks::{SampledPacket, TopView},
    requests::CustomerRef,
};

use super::{
    attacks::rate,
    output::{fail, report, table},
    query,
};
use crate::client::Client;

fn line(p: &SampledPacket) -> String {
    let who = match (&p.customer, &p.customer_name) {
        (Some(c), Some(n)) => format!("customer {c} ({n})"),
        (Some(c), None) => format!("customer {c}"),
        _ => "no customer".into(),
    };
    let by = match (&p.rule, &p.entry) {
        (Some(r), _) => format!(
            " by {} rule {}",
            r["layer"].as_str().unwrap_or("?"),
            r["id"]
        ),
        (None, Some(e)) => format!(
            " by {} entry {} ({})",
            e["layer"].as_str().unwrap_or("?"),
            e["prefix"].as_str().unwrap_or("?"),
            e["scope"].as_str().unwrap_or("?")
        ),
        _ => String::new(),
    };
    let port = |a: &str, p: Option<u16>| match p {
        Some(p) if a.contains(':') => format!("[{a}]:{p}"),
        Some(p) => format!("{a}:{p}"),
        None => a.to_string(),
    };
    let flags = p
        .tcp_flags
        .as_ref()
        .map(|f| format!(" [{f}]"))
        .unwrap_or_default();
    format!(
        "{} {:<4} {:<15}{by} {who} {} {} -> {}{flags} len {} (1 in {})",
        p.at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        p.verdict,
        p.reason,
        p.protocol,
        port(&p.src, p.sport),
        port(&p.dst, p.dport),
        p.length,
        p.sampling
    )
}

/// Streams until interrupted; a stream the agent ends (its connection lifetime, a
/// restart) is picked up again.
pub fn monitor(
    client: &Client,
    customer: Option<CustomerRef>,
    reason: Option<String>,
    json: bool,
) -> ExitCode {
    let mut path = "/v1/monitor?".to_string();
    if let Some(c) = &customer {
        path.push_str(&format!("customer={}&", query(&c.to_string())));
    }
    if let Some(r) = &reason {
        path.push_str(&format!("reason={}", query(r)));
    }
    let mut failures = 0;
    loop {
        let r = client.stream_lines(&path, |l| {
            if json {
                println!("{l}");
            } else {
                match serde_json::from_str::<SampledPacket>(l) {
                    Ok(p) => println!("{}", line(&p)),
                    Err(_) => eprintln!("mssp monitor: {l}"),
                }
            }
            true
        });
        match r {
            Ok(()) => failures = 0,
            Err(e @ crate::client::ClientError::Api { .. }) => return fail(&e, json),
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    return fail(&e, json);
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

pub fn top(client: &Client, customer: Option<CustomerRef>, json: bool) -> ExitCode {
    let path = match &customer {
        Some(c) => format!("/v1/top?customer={}", query(&c.to_string())),
        None => "/v1/top".into(),
    };
    report(client.get::<TopView>(&path), json, |v| {
        println!(
            "over the last {:.1} s (customers and sources estimated from samples; destinations metered)",
            v.window_seconds
        );
        let mut t = table(&["customer", "pps", "bps", "dropped pps"]);
        for c in &v.customers {
            t.add_row(vec![
                match &c.name {
                    Some(n) => format!("{} ({n})", c.customer),
                    None => c.customer.to_string(),
                },
                rate(c.pps),
                rate(c.bps),
                rate(c.dropped_pps),
            ]);
        }
        println!("{t}");
        if !v.targets.is_empty() {
            let mut t = table(&[
                "customer",
                "destination",
                "pps",
                "bps",
                "udp",
                "syn",
                "icmp",
                "frag",
                "attack",
            ]);
            for x in &v.targets {
                t.add_row(vec![
                    x.customer.to_string(),
                    x.target.clone(),
                    rate(x.pps),
                    rate(x.bps),
                    rate(x.udp_pps),
                    rate(x.syn_pps),
                    rate(x.icmp_pps),
                    rate(x.frag_pps),
                    x.attack.clone().unwrap_or_default(),
                ]);
            }
            println!("{t}");
        }
        if !v.sources.is_empty() {
            let mut t = table(&["source", "pps (est.)", "share"]);
            for s in &v.sources {
                t.add_row(vec![
                    s.source.clone(),
                    rate(s.pps),
                    format!("{:.1}%", 100.0 * s.share),
                ]);
            }
            println!("{t}");
        }
    })
}

/// `mssp monitor --filtering`: content filtering's decisions (every inspected name, with
/// the rule that blocked it), as the inspector reports them, until interrupted.
pub fn filtering(client: &Client, customer: Option<u32>, json: bool) -> ExitCode {
    // Only what happens from now on (the report lags up to a second behind).
    let mut last = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    loop {
        let v = match client.get::<serde_json::Value>("/v1/filter/stats") {
            Ok(v) => v,
            Err(e) => return fail(&e, json),
        };
        for e in v["report"]["recent"].as_array().into_iter().flatten() {
            let at = e["unix_ms"].as_u64().unwrap_or(0);
            if at <= last
                || (customer.is_some() && e["customer_id"].as_u64().map(|c| c as u32) != customer)
            {
                continue;
            }
            last = at;
            if json {
                println!("{e}");
            } else {
                let when = time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000_000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                println!(
                    "{when} {:<8} {:<4} {} from {} customer {}{}",
                    e["verdict"].as_str().unwrap_or("?"),
                    e["kind"].as_str().unwrap_or("?"),
                    e["name"].as_str().unwrap_or("?"),
                    e["source"].as_str().unwrap_or("?"),
                    e["customer_id"],
                    e["rule"]
                        .as_str()
                        .map(|r| format!(" (rule {r})"))
                        .unwrap_or_default()
                );
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
