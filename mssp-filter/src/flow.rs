//! One steered frame: parse, decide, and re-inject, answer or hold. TCP flows whose name
//! is not in their first segment (a ClientHello larger than one segment) are held here
//! until it comes, then released in order or reset.

use std::{collections::HashMap, time::Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use mssp_common::filter::{FlowKey, flow_verdict};
use mssp_core::policy::filtering::FilterAction;

use crate::{
    dns, http,
    inject::Injector,
    packet::{self, Frame, PORT},
    reply,
    stats::{Event, Stats, unix_ms},
    table::FilterTable,
    tls,
};

/// A flow whose first bytes did not yet say its name: its segments wait here.
pub(crate) struct Held {
    pub(crate) since: Instant,
    start_seq: u32,
    data: Vec<u8>,
    pub(crate) frames: Vec<Vec<u8>>,
}

/// Requests larger than this are not waited for (let through).
const MAX_HELD_BYTES: usize = 32 * 1024;

/// What one frame needs while the socket's ring is borrowed.
pub(crate) struct Ctx<'a> {
    pub(crate) table: &'a FilterTable,
    pub(crate) injector: &'a mut Injector,
    pub(crate) flows: &'a mut BpfHashMap<MapData, FlowKey, u32>,
    pub(crate) held: &'a mut HashMap<FlowKey, Held>,
    /// Flows decided in the last seconds (true: blocked): segments already in flight when
    /// the verdict reached the kernel's cache follow it here.
    pub(crate) decided: &'a mut HashMap<FlowKey, (bool, Instant)>,
    pub(crate) stats: &'a mut Stats,
    pub(crate) replies: &'a mut Vec<Vec<u8>>,
}

/// What a flow's first bytes say.
enum Said {
    Name(&'static str, String),
    NoName,
    Incomplete,
}

impl Ctx<'_> {
    fn allow(&mut self, frame: &mut [u8], customer: Option<u32>) {
        self.stats.customer(customer).allowed += 1;
        if let Err(e) = self.injector.inject(frame) {
            log::warn!("re-injecting a frame: {e}");
        }
    }

    pub(crate) fn handle(&mut self, frame: &mut [u8]) {
        let Some(f) = packet::parse(frame) else {
            self.stats.customer(None).inspected += 1;
            self.stats.customer(None).unparsed += 1;
            let _ = self.injector.inject(frame);
            return;
        };
        let customer = self.table.customer_of(f.src);
        self.stats.customer(customer).inspected += 1;
        reply::fix_checksum(frame, &f);
        if f.tcp() {
            self.tcp(frame, &f, customer);
        } else {
            self.udp_dns(frame, &f, customer);
        }
    }

    fn event(
        &mut self,
        f: &Frame,
        customer: Option<u32>,
        kind: &str,
        name: &str,
        verdict: &str,
        rule: Option<String>,
    ) {
        self.stats.event(Event {
            unix_ms: unix_ms(),
            customer_id: customer,
            source: f.src.to_string(),
            kind: kind.into(),
            name: name.into(),
            verdict: verdict.into(),
            rule,
        });
    }

    fn udp_dns(&mut self, frame: &mut [u8], f: &Frame, customer: Option<u32>) {
        let msg = &frame[f.payload.clone()];
        let q = match dns::question(msg) {
            Ok(q) => q,
            Err(_) => {
                self.stats.customer(customer).unparsed += 1;
                return self.allow(frame, customer);
            }
        };
        let Some(name) = q.name.clone() else {
            return self.allow(frame, customer);
        };
        let d = self.table.decide_for(customer, &name);
        let Some(b) = d.blocked else {
            self.event(f, customer, "dns", &name, "allow", None);
            return self.allow(frame, customer);
        };
        let verdict = match b.action {
            FilterAction::Drop => {
                self.stats.customer(customer).dropped += 1;
                "drop"
            }
            FilterAction::Nxdomain => {
                self.stats.customer(customer).nxdomain += 1;
                let a = dns::answer(msg, &q, dns::Answer::NxDomain);
                self.replies.push(reply::udp(frame, f, &a));
                "nxdomain"
            }
            FilterAction::Sinkhole => {
                self.stats.customer(customer).sinkhole += 1;
                let a = dns::answer(
                    msg,
                    &q,
                    dns::Answer::Sinkhole {
                        v4: b.sinkhole_v4,
                        v6: b.sinkhole_v6,
                    },
                );
                self.replies.push(reply::udp(frame, f, &a));
                "sinkhole"
            }
        };
        self.event(f, customer, "dns", &name, verdict, Some(b.rule));
    }

    fn tcp(&mut self, frame: &mut [u8], f: &Frame, customer: Option<u32>) {
        let key = f.flow();
        if let Some((blocked, _)) = self.decided.get(&key) {
            if *blocked {
                self.stats.customer(customer).dropped_late += 1;
                return;
            }
            if f.dport != PORT::DNS {
                return self.allow(frame, customer);
            }
        }
        let payload = &frame[f.payload.clone()];
        let mut h = self.held.remove(&key).unwrap_or_else(|| Held {
            since: Instant::now(),
            start_seq: f.seq,
            data: Vec::new(),
            frames: Vec::new(),
        });
        let at = f.seq.wrapping_sub(h.start_seq) as usize;
        if at == h.data.len() {
            h.data.extend_from_slice(payload);
        } else if at < h.data.len() && at + payload.len() > h.data.len() {
            // A retransmission that also carries new bytes.
            h.data.extend_from_slice(&payload[h.data.len() - at..]);
        }
        let said = match f.dport {
            PORT::DNS => {
                let d = &h.data;
                if d.len() < 2 || d.len() < 2 + u16::from_be_bytes([d[0], d[1]]) as usize {
                    Said::Incomplete
                } else {
                    match dns::question(&d[2..]) {
                        Ok(dns::Question { name: Some(n), .. }) => Said::Name("dns", n),
                        _ => Said::NoName,
                    }
                }
            }
            PORT::HTTPS => match tls::sni(&h.data) {
                tls::Sni::Name(n) => Said::Name("tls", n),
                tls::Sni::Incomplete => Said::Incomplete,
                tls::Sni::Absent | tls::Sni::NotTls => Said::NoName,
            },
            _ => match http::host(&h.data) {
                http::Host::Name(n) => Said::Name("http", n),
                http::Host::Incomplete => Said::Incomplete,
                http::Host::Absent | http::Host::NotHttp => Said::NoName,
            },
        };
        let cache = f.dport != PORT::DNS;
        let (kind, name) = match said {
            Said::Incomplete if h.data.len() < MAX_HELD_BYTES => {
                if h.frames.is_empty() {
                    self.stats.customer(customer).held += 1;
                }
                h.frames.push(frame.to_vec());
                self.held.insert(key, h);
                return;
            }
            Said::Incomplete | Said::NoName => {
                if !matches!(said, Said::NoName) || f.dport != PORT::DNS {
                    self.stats.customer(customer).unparsed += 1;
                }
                self.release(h, key, cache, customer);
                return self.allow(frame, customer);
            }
            Said::Name(kind, name) => (kind, name),
        };
        let d = self.table.decide_for(customer, &name);
        let Some(b) = d.blocked else {
            self.event(f, customer, kind, &name, "allow", None);
            self.release(h, key, cache, customer);
            return self.allow(frame, customer);
        };
        // Blocked: the flow dies here; XDP drops whatever else it sends.
        let _ = self.flows.insert(key, flow_verdict::BLOCK, 0);
        self.decided.insert(key, (true, Instant::now()));
        let verdict = if f.dport == PORT::DNS && b.action != FilterAction::Drop {
            let d = &h.data;
            let msg = &d[2..2 + u16::from_be_bytes([d[0], d[1]]) as usize];
            let answer = match (dns::question(msg), b.action) {
                (Ok(q), FilterAction::Sinkhole) => Some(dns::answer(
                    msg,
                    &q,
                    dns::Answer::Sinkhole {
                        v4: b.sinkhole_v4,
                        v6: b.sinkhole_v6,
                    },
                )),
                (Ok(q), _) => Some(dns::answer(msg, &q, dns::Answer::NxDomain)),
                _ => None,
            };
            if let Some(a) = answer {
                self.replies.push(reply::tcp_dns(frame, f, &a));
            }
            let c = self.stats.customer(customer);
            if b.action == FilterAction::Sinkhole {
                c.sinkhole += 1;
                "sinkhole"
            } else {
                c.nxdomain += 1;
                "nxdomain"
            }
        } else if f.dport == PORT::DNS {
            self.stats.customer(customer).dropped += 1;
            "drop"
        } else {
            self.replies.push(reply::tcp_reset(frame, f));
            self.stats.customer(customer).reset += 1;
            "reset"
        };
        self.event(f, customer, kind, &name, verdict, Some(b.rule));
    }

    /// The held segments of an allowed flow go on, in the order they came.
    fn release(&mut self, h: Held, key: FlowKey, cache: bool, customer: Option<u32>) {
        for mut fr in h.frames {
            self.allow(&mut fr, customer);
        }
        if cache {
            let _ = self.flows.insert(key, flow_verdict::ALLOW, 0);
            self.decided.insert(key, (false, Instant::now()));
        }
    }
}
