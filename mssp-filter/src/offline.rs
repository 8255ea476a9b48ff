//! The inspector's decision for one frame by itself (no flow state): what `mssp simulate
//! --customer-side` prints for a capture taken on a customer interface.

use crate::{
    dns, http, packet,
    table::{Decision, FilterTable},
    tls,
};

/// What the inspector would read and decide of one frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FrameVerdict {
    /// "dns", "tls" or "http"; `None` when the frame is not one the data path steers or
    /// names nothing in its own bytes (it passes).
    pub kind: Option<&'static str>,
    pub name: Option<String>,
    pub decision: Option<Decision>,
}

pub fn frame(table: &FilterTable, f: &[u8]) -> FrameVerdict {
    let none = FrameVerdict {
        kind: None,
        name: None,
        decision: None,
    };
    let Some(p) = packet::parse(f) else {
        return none;
    };
    let payload = &f[p.payload.clone()];
    let (kind, name) = match (p.proto, p.dport) {
        (packet::PROTO_UDP, packet::PORT::DNS) => {
            ("dns", dns::question(payload).ok().and_then(|q| q.name))
        }
        (packet::PROTO_TCP, packet::PORT::DNS) if payload.len() > 2 => (
            "dns",
            dns::question(&payload[2..]).ok().and_then(|q| q.name),
        ),
        (packet::PROTO_TCP, packet::PORT::HTTPS) => match tls::sni(payload) {
            tls::Sni::Name(n) => ("tls", Some(n)),
            _ => ("tls", None),
        },
        (packet::PROTO_TCP, packet::PORT::HTTP) => match http::host(payload) {
            http::Host::Name(n) => ("http", Some(n)),
            _ => ("http", None),
        },
        _ => return none,
    };
    let decision = name.as_ref().map(|n| table.decide(p.src, n));
    FrameVerdict {
        kind: Some(kind),
        name,
        decision,
    }
}
