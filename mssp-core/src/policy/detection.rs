//! Attack detection settings of a customer (or the policy-wide default): the document's
//! `"detection"` object and its validated form. The agent's detector reads the validated one.

use serde::{Deserialize, Serialize};

use super::{FieldError, strict};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "detection: an object with mode, thresholds and optionally windows, hold, ttl, max_rules, max_sources"
)]
pub struct DetectionDoc {
    /// `"off"`, `"monitor"` (record attacks and the rule that would be installed) or
    /// `"mitigate"` (install it).
    pub mode: String,
    #[serde(default)]
    pub thresholds: ThresholdsDoc,
    /// Consecutive one-second windows over a threshold before an attack starts (default 2).
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub windows: Option<u64>,
    /// Seconds traffic must stay under half of every threshold before an attack ends
    /// (default 30).
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold: Option<u64>,
    /// Seconds an auto mitigation lives unless the attack goes on (default 300); it is
    /// extended while the attack lasts and expires in the data path even if no agent runs.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<u64>,
    /// Auto rules per customer (default 4); at the cap an attack gets one rate limit on its
    /// target instead.
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_rules: Option<u64>,
    /// Auto source blocks per customer (default 64).
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_sources: Option<u64>,
}

/// Per destination address, per second. Any subset.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(
    remote = "Self",
    deny_unknown_fields,
    expecting = "thresholds: an object with pps, bps, udp_pps, syn_pps, icmp_pps, frag_pps"
)]
pub struct ThresholdsDoc {
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub pps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub bps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_pps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub syn_pps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_pps: Option<u64>,
    #[serde(
        default,
        deserialize_with = "strict::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub frag_pps: Option<u64>,
}

crate::strict_struct!(DetectionDoc);
crate::strict_struct!(ThresholdsDoc);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectMode {
    Off,
    Monitor,
    Mitigate,
}

impl DetectMode {
    pub const fn name(self) -> &'static str {
        match self {
            DetectMode::Off => "off",
            DetectMode::Monitor => "monitor",
            DetectMode::Mitigate => "mitigate",
        }
    }
}

/// What a threshold measures: a meter class and packets or bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Pps,
    Bps,
    UdpPps,
    SynPps,
    IcmpPps,
    FragPps,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Pps,
        Metric::Bps,
        Metric::UdpPps,
        Metric::SynPps,
        Metric::IcmpPps,
        Metric::FragPps,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Metric::Pps => "pps",
            Metric::Bps => "bps",
            Metric::UdpPps => "udp_pps",
            Metric::SynPps => "syn_pps",
            Metric::IcmpPps => "icmp_pps",
            Metric::FragPps => "frag_pps",
        }
    }

    /// The meter class (`mssp_common::abi::meter_class`) it reads.
    pub const fn class(self) -> usize {
        use mssp_common::abi::meter_class as m;
        match self {
            Metric::Pps | Metric::Bps => m::ALL,
            Metric::UdpPps => m::UDP,
            Metric::SynPps => m::TCP_SYN,
            Metric::IcmpPps => m::ICMP,
            Metric::FragPps => m::FRAG,
        }
    }

    pub const fn is_bits(self) -> bool {
        matches!(self, Metric::Bps)
    }
}

/// Validated detection settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Detection {
    pub mode: DetectMode,
    /// (metric, per-second limit); at least one unless the mode is off.
    pub thresholds: Vec<(Metric, u64)>,
    pub windows: u32,
    pub hold_secs: u32,
    pub ttl_secs: u32,
    pub max_rules: u32,
    pub max_sources: u32,
}

pub const DEFAULT_WINDOWS: u32 = 2;
pub const DEFAULT_HOLD_SECS: u32 = 30;
pub const DEFAULT_TTL_SECS: u32 = 300;
pub const DEFAULT_MAX_RULES: u32 = 4;
pub const DEFAULT_MAX_SOURCES: u32 = 64;

impl Detection {
    pub const OFF: Detection = Detection {
        mode: DetectMode::Off,
        thresholds: Vec::new(),
        windows: DEFAULT_WINDOWS,
        hold_secs: DEFAULT_HOLD_SECS,
        ttl_secs: DEFAULT_TTL_SECS,
        max_rules: DEFAULT_MAX_RULES,
        max_sources: DEFAULT_MAX_SOURCES,
    };

    pub fn threshold(&self, m: Metric) -> Option<u64> {
        self.thresholds
            .iter()
            .find(|(x, _)| *x == m)
            .map(|(_, v)| *v)
    }

    /// The document form (what `detection show` prints and the local layer stores).
    pub fn to_doc(&self) -> DetectionDoc {
        let t = |m| self.threshold(m);
        DetectionDoc {
            mode: self.mode.name().into(),
            thresholds: ThresholdsDoc {
                pps: t(Metric::Pps),
                bps: t(Metric::Bps),
                udp_pps: t(Metric::UdpPps),
                syn_pps: t(Metric::SynPps),
                icmp_pps: t(Metric::IcmpPps),
                frag_pps: t(Metric::FragPps),
            },
            windows: Some(self.windows as u64),
            hold: Some(self.hold_secs as u64),
            ttl: Some(self.ttl_secs as u64),
            max_rules: Some(self.max_rules as u64),
            max_sources: Some(self.max_sources as u64),
        }
    }
}

/// Validates a `detection` object at `path`; problems go to `errors`.
pub fn detection(
    doc: &DetectionDoc,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Detection> {
    let before = errors.len();
    let mut err = |field: &str, message: String| {
        errors.push(FieldError {
            path: format!("{path}.{field}"),
            message,
        })
    };
    let mode = match doc.mode.as_str() {
        "off" => DetectMode::Off,
        "monitor" => DetectMode::Monitor,
        "mitigate" => DetectMode::Mitigate,
        other => {
            err(
                "mode",
                format!(
                    "{other:?} is not a detection mode; use \"off\", \"monitor\" or \"mitigate\""
                ),
            );
            DetectMode::Off
        }
    };
    let t = &doc.thresholds;
    let mut thresholds = Vec::new();
    let mut bad_threshold = false;
    for (m, v) in Metric::ALL
        .into_iter()
        .zip([t.pps, t.bps, t.udp_pps, t.syn_pps, t.icmp_pps, t.frag_pps])
    {
        match v {
            None => {}
            Some(0) => {
                bad_threshold = true;
                err(
                    &format!("thresholds.{}", m.name()),
                    "0 would make every packet an attack; give a positive rate per destination address".into(),
                )
            }
            Some(v) if v > 1_000_000_000_000 => {
                bad_threshold = true;
                err(
                    &format!("thresholds.{}", m.name()),
                    format!("{v} is beyond any link; at most 1000000000000 per second"),
                )
            }
            Some(v) => thresholds.push((m, v)),
        }
    }
    if mode != DetectMode::Off && thresholds.is_empty() && !bad_threshold {
        err(
            "thresholds",
            format!(
                "mode {:?} needs at least one threshold (pps, bps, udp_pps, syn_pps, icmp_pps, frag_pps)",
                mode.name()
            ),
        );
    }
    let mut bounded =
        |field: &str, v: Option<u64>, default: u32, lo: u64, hi: u64, unit: &str| -> u32 {
            match v {
                None => default,
                Some(v) if (lo..=hi).contains(&v) => v as u32,
                Some(v) => {
                    err(
                        field,
                        format!("{v} is out of range; give {lo} to {hi} {unit}"),
                    );
                    default
                }
            }
        };
    let windows = bounded(
        "windows",
        doc.windows,
        DEFAULT_WINDOWS,
        1,
        10,
        "one-second windows",
    );
    let hold_secs = bounded("hold", doc.hold, DEFAULT_HOLD_SECS, 1, 3600, "seconds");
    let ttl_secs = bounded("ttl", doc.ttl, DEFAULT_TTL_SECS, 10, 86_400, "seconds");
    let max_rules = bounded(
        "max_rules",
        doc.max_rules,
        DEFAULT_MAX_RULES,
        1,
        16,
        "rules",
    );
    let max_sources = bounded(
        "max_sources",
        doc.max_sources,
        DEFAULT_MAX_SOURCES,
        1,
        1024,
        "source entries",
    );
    drop(bounded);
    (errors.len() == before).then_some(Detection {
        mode,
        thresholds,
        windows,
        hold_secs,
        ttl_secs,
        max_rules,
        max_sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<Detection, Vec<FieldError>> {
        let doc: DetectionDoc = serde_json::from_str(json).map_err(|e| {
            vec![FieldError {
                path: String::new(),
                message: e.to_string(),
            }]
        })?;
        let mut errors = Vec::new();
        detection(&doc, "detection", &mut errors).ok_or(errors)
    }

    #[test]
    fn a_full_object_is_read_with_defaults_for_what_is_left_out() {
        let d = check(r#"{"mode":"mitigate","thresholds":{"pps":10000,"syn_pps":2000}}"#).unwrap();
        assert_eq!(d.mode, DetectMode::Mitigate);
        assert_eq!(d.threshold(Metric::Pps), Some(10_000));
        assert_eq!(d.threshold(Metric::SynPps), Some(2_000));
        assert_eq!(d.threshold(Metric::Bps), None);
        assert_eq!((d.windows, d.hold_secs, d.ttl_secs), (2, 30, 300));
        let back = check(&serde_json::to_string(&d.to_doc()).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn bad_values_are_named_with_what_would_be_right() {
        let e = check(r#"{"mode":"block","thresholds":{"pps":0},"hold":0}"#).unwrap_err();
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("detection.mode: \"block\"")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("detection.thresholds.pps: 0")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("detection.hold: 0 is out of range; give 1 to 3600")),
            "{text:?}"
        );
        let e = check(r#"{"mode":"monitor"}"#).unwrap_err();
        assert!(
            e[0].to_string().contains("needs at least one threshold"),
            "{e:?}"
        );
        assert!(check(r#"{"mode":"monitor","thresholds":{"ppps":1}}"#).is_err());
        assert!(check(r#"{"mode":"monitor","thresholds":{"pps":null}}"#).is_err());
        assert!(check(r#"{"mode":"off"}"#).is_ok());
    }
}
