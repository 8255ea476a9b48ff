//! The agent's configuration file (TOML). Unknown keys are refused; every error names the
//! key and the file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use mssp_core::{
    capacity::Capacities,
    pins::{AttachMode, InterfaceConfig, PinSpec},
    policy::Capacity,
};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum InterfaceEntry {
    Name(String),
    Detailed(InterfaceConfig),
}

/// Map sizes (entries). Defaults hold about a million source entries with room to replace
/// them; raise them for larger policies (memory: see README).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    pub customers: Option<u32>,
    pub nodes4: Option<u32>,
    pub nodes6: Option<u32>,
    pub entries: Option<u32>,
    pub chain: Option<u32>,
    pub rules: Option<u32>,
    pub rule_cidrs: Option<u32>,
    pub buckets: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream-facing interfaces to filter.
    pub interfaces: Vec<InterfaceEntry>,
    /// Customer-facing interfaces: content filtering (the customer is the packet's source).
    #[serde(default)]
    pub customer_interfaces: Vec<InterfaceEntry>,
    /// `[filtering]`: the AF_XDP inspector on the customer interfaces.
    #[serde(default)]
    pub filtering: FilteringConfig,
    /// Where the program, maps and links are pinned (on a bpffs).
    pub pin_dir: PathBuf,
    /// Where the policy layers and id tables persist.
    pub state_dir: PathBuf,
    /// The local API's Unix socket (NOC CLI).
    pub socket: PathBuf,
    /// Octal mode of the socket.
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// Group that owns the socket (the agent's own group when unset).
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Prometheus endpoint, e.g. "127.0.0.1:9469".
    pub metrics_listen: SocketAddr,
    /// Initial central policy, used when the state directory holds none.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Which per-entry hit series to export: "nonzero" (default), "all" or "none".
    #[serde(default = "default_entry_metrics")]
    pub metrics_entry_hits: String,
    #[serde(default)]
    pub capacity: CapacityConfig,
    /// Central push endpoint (HTTPS with mutual TLS).
    #[serde(default)]
    pub push_listen: Option<SocketAddr>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Largest policy document a push may carry, in bytes.
    #[serde(default = "default_push_max_bytes")]
    pub push_max_bytes: usize,
    /// How long a push client may take for the TLS handshake and for sending its request,
    /// e.g. "60s"; slower clients are cut off.
    #[serde(default = "default_push_timeout")]
    pub push_timeout: String,
    /// Attack detection on this edge (the thresholds are in the policy).
    #[serde(default)]
    pub detection: DetectionConfig,
    /// The fleet: decisions from the controller over NATS JetStream.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: where the controller's decisions come from, and who this edge is.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `tls://host:4222` (or `nats://127.0.0.1:PORT` for a lab broker).
    pub nats_url: String,
    /// This edge's name in the fleet (letters, digits, `-`, `_`).
    pub edge: String,
    /// The controller's ed25519 public key (`mssp fleet keygen` writes it).
    pub controller_key: PathBuf,
    /// A NATS credentials file, or a user and a file holding its password.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS: the broker's CA, and this edge's client certificate and key.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Seconds between heartbeats (default 5).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
}

fn default_heartbeat() -> u64 {
    5
}

/// `[filtering]`: how the inspector reads and re-injects on the customer interfaces.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilteringConfig {
    /// `"auto"` (zero-copy where the driver allows, else copy), `"copy"` or `"zerocopy"`.
    #[serde(default = "default_xdp_mode")]
    pub xdp_mode: String,
    /// The TAP device allowed packets re-enter the kernel through (created by the inspector).
    #[serde(default = "default_inject_device")]
    pub inject_device: String,
    /// How long a TLS ClientHello or HTTP request split over segments is held for its rest,
    /// in milliseconds, before the flow is let through uninspected (fail-open).
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
    /// Seconds before the agent restarts an inspector that exited.
    #[serde(default = "default_restart_secs")]
    pub restart_secs: u64,
}

impl Default for FilteringConfig {
    fn default() -> Self {
        FilteringConfig {
            xdp_mode: default_xdp_mode(),
            inject_device: default_inject_device(),
            hold_ms: default_hold_ms(),
            restart_secs: default_restart_secs(),
        }
    }
}

fn default_xdp_mode() -> String {
    "auto".into()
}

fn default_inject_device() -> String {
    "mssp-inj0".into()
}

fn default_hold_ms() -> u64 {
    200
}

fn default_restart_secs() -> u64 {
    2
}

/// `[detection]`: the edge-wide caps on what the detector installs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Auto rules in force at once, over all customers (each customer also has its own cap,
    /// `max_rules` in its detection settings).
    #[serde(default = "default_max_auto_rules")]
    pub max_auto_rules: usize,
    /// Auto source entries in force at once, over all customers.
    #[serde(default = "default_max_auto_sources")]
    pub max_auto_sources: usize,
    /// Ended attacks kept in the history.
    #[serde(default = "default_attack_history")]
    pub history: usize,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            max_auto_rules: default_max_auto_rules(),
            max_auto_sources: default_max_auto_sources(),
            history: default_attack_history(),
        }
    }
}

fn default_max_auto_rules() -> usize {
    256
}

fn default_max_auto_sources() -> usize {
    4096
}

fn default_attack_history() -> usize {
    1000
}

fn default_socket_mode() -> String {
    "0660".into()
}

fn default_entry_metrics() -> String {
    "nonzero".into()
}

fn default_push_max_bytes() -> usize {
    512 * 1024 * 1024
}

fn default_push_timeout() -> String {
    "60s".into()
}

fn entries(list: &[InterfaceEntry], customer: bool) -> Vec<InterfaceConfig> {
    list.iter()
        .map(|e| match e {
            InterfaceEntry::Name(n) => InterfaceConfig {
                name: n.clone(),
                mode: AttachMode::Auto,
                customer,
            },
            InterfaceEntry::Detailed(c) => InterfaceConfig {
                customer,
                ..c.clone()
            },
        })
        .collect()
}

/// A configuration that cannot be used (the agent exits 64).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let cfg: Config =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        cfg.check().map_err(err)?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.interfaces.is_empty() {
            return Err(
                "interfaces is empty; list the upstream-facing interfaces to filter".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for i in self
            .interfaces()
            .into_iter()
            .chain(self.customer_interfaces())
        {
            if i.name.is_empty() || i.name.len() > 15 || i.name.contains('/') {
                return Err(format!("interfaces: {:?} is not an interface name", i.name));
            }
            if !seen.insert(i.name.clone()) {
                return Err(format!(
                    "interfaces: {} is listed twice (an interface is upstream- or customer-facing, not both)",
                    i.name
                ));
            }
        }
        if !matches!(
            self.filtering.xdp_mode.as_str(),
            "auto" | "copy" | "zerocopy"
        ) {
            return Err(format!(
                "filtering.xdp_mode = {:?}; use \"auto\", \"copy\" or \"zerocopy\"",
                self.filtering.xdp_mode
            ));
        }
        let d = &self.filtering.inject_device;
        if d.is_empty() || d.len() > 15 || d.contains('/') || seen.contains(d) {
            return Err(format!(
                "filtering.inject_device = {d:?}: give a new interface name of 1 to 15 characters"
            ));
        }
        if self.filtering.hold_ms == 0 || self.filtering.hold_ms > 5000 {
            return Err(format!(
                "filtering.hold_ms = {}: give 1 to 5000",
                self.filtering.hold_ms
            ));
        }
        self.socket_mode_bits()?;
        if !matches!(self.metrics_entry_hits.as_str(), "nonzero" | "all" | "none") {
            return Err(format!(
                "metrics_entry_hits = {:?}; use \"nonzero\", \"all\" or \"none\"",
                self.metrics_entry_hits
            ));
        }
        self.push_timeout()?;
        if self.push_listen.is_some()
            && (self.tls_cert.is_none() || self.tls_key.is_none() || self.client_ca.is_none())
        {
            return Err(
                "push_listen needs tls_cert, tls_key and client_ca (mutual TLS is mandatory)"
                    .into(),
            );
        }
        if let Some(f) = &self.fleet {
            if !mssp_fleet::subjects::valid_token(&f.edge) {
                return Err(format!(
                    "fleet.edge = {:?}: give 1 to 64 letters, digits, '-' or '_'",
                    f.edge
                ));
            }
            if !["nats://", "tls://"]
                .iter()
                .any(|p| f.nats_url.starts_with(p))
            {
                return Err(format!(
                    "fleet.nats_url = {:?}: give tls://host:port (or nats:// for a lab broker)",
                    f.nats_url
                ));
            }
            if f.user.is_some() != f.password_file.is_some() {
                return Err("fleet: user and password_file go together".into());
            }
            if f.tls_cert.is_some() != f.tls_key.is_some() {
                return Err("fleet: tls_cert and tls_key go together".into());
            }
            if f.heartbeat_secs == 0 || f.heartbeat_secs > 300 {
                return Err(format!(
                    "fleet.heartbeat_secs = {}: give 1 to 300",
                    f.heartbeat_secs
                ));
            }
        }
        Ok(())
    }

    pub fn push_timeout(&self) -> Result<std::time::Duration, String> {
        humantime::parse_duration(&self.push_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "push_timeout = {:?} is not a duration like \"60s\" or \"2m\"",
                    self.push_timeout
                )
            })
    }

    pub fn interfaces(&self) -> Vec<InterfaceConfig> {
        entries(&self.interfaces, false)
    }

    pub fn customer_interfaces(&self) -> Vec<InterfaceConfig> {
        entries(&self.customer_interfaces, true)
    }

    pub fn socket_mode_bits(&self) -> Result<u32, String> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                format!(
                    "socket_mode = {:?} is not an octal file mode like \"0660\"",
                    self.socket_mode
                )
            })
    }

    /// The pinned data plane this config describes.
    pub fn pin_spec(&self) -> PinSpec {
        PinSpec {
            pin_dir: self.pin_dir.clone(),
            capacities: self.capacities(),
            interfaces: self
                .interfaces()
                .into_iter()
                .chain(self.customer_interfaces())
                .collect(),
        }
    }

    /// What a policy document may hold with these map sizes (checked at validation).
    pub fn policy_capacity(&self) -> Capacity {
        Capacity::of(&self.capacities())
    }

    /// The detector's settings from `[detection]`.
    pub fn engine_config(&self) -> mssp_detect::EngineConfig {
        mssp_detect::EngineConfig {
            max_auto_rules: self.detection.max_auto_rules,
            max_auto_sources: self.detection.max_auto_sources,
            history: self.detection.history,
            ..mssp_detect::EngineConfig::default()
        }
    }

    pub fn capacities(&self) -> Capacities {
        let d = Capacities::default();
        let c = &self.capacity;
        let slots = c.customers.map_or(d.slots, |n| n + 1);
        Capacities {
            slots,
            records: 2 * slots + 64,
            nodes4: c.nodes4.unwrap_or(d.nodes4),
            nodes6: c.nodes6.unwrap_or(d.nodes6),
            chain: c.chain.unwrap_or(d.chain),
            entry_ids: c.entries.map_or(d.entry_ids, |n| n + 1),
            rules: c.rules.unwrap_or(d.rules),
            rule_cidrs: c.rule_cidrs.unwrap_or(d.rule_cidrs),
            buckets: c.buckets.unwrap_or(d.buckets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(s).map_err(|e| e.to_string())?;
        cfg.check()?;
        Ok(cfg)
    }

    const MIN: &str = r#"
        interfaces = ["eth1", { name = "eth2", mode = "skb" }]
        pin_dir = "/sys/fs/bpf/mssp"
        state_dir = "/var/lib/mssp"
        socket = "/run/mssp/mssp.sock"
        metrics_listen = "127.0.0.1:9469"
    "#;

    #[test]
    fn minimal() {
        let c = parse(MIN).unwrap();
        let i = c.interfaces();
        assert_eq!(i[0].mode, AttachMode::Auto);
        assert_eq!(i[1].mode, AttachMode::Skb);
        assert_eq!(c.socket_mode_bits().unwrap(), 0o660);
    }

    #[test]
    fn refusals_name_the_key() {
        let e = parse(&format!("{MIN}\nbogus = 1")).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = parse(&MIN.replace("\"skb\"", "\"fast\"")).unwrap_err();
        assert!(e.contains("interfaces"), "{e}");
        let e = parse(&MIN.replace("127.0.0.1:9469", "localhost")).unwrap_err();
        assert!(e.contains("metrics_listen"), "{e}");
        let e = parse(&format!("{MIN}\nsocket_mode = \"rw\"")).unwrap_err();
        assert!(e.contains("socket_mode"), "{e}");
        let e = parse(&format!("{MIN}\npush_listen = \"0.0.0.0:8443\"")).unwrap_err();
        assert!(e.contains("mutual TLS"), "{e}");
        let e = parse(&format!("{MIN}\npush_timeout = \"soon\"")).unwrap_err();
        assert!(e.contains("push_timeout"), "{e}");
    }
}
