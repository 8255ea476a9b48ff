//! `controller.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `tls://host:4222` (or `nats://127.0.0.1:PORT` for a lab broker).
    pub nats_url: String,
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The ed25519 seed decisions are signed with (`mssp fleet keygen`).
    pub signing_key: PathBuf,
    /// The local API (`mssp --controller-socket`), mode 0660.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default)]
    pub correlation: Correlation,
}

/// When an attack seen at some edges becomes a decision for all of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// The same attack (customer, target, fingerprint) reported by at least this many
    /// edges ...
    #[serde(default = "default_edges")]
    pub edges: usize,
    /// ... within this many seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Customers for whom any one edge's attack is enough.
    #[serde(default)]
    pub fleet_customers: Vec<u32>,
    /// Seconds a correlated decision lives (renewed while reports keep coming).
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

impl Default for Correlation {
    fn default() -> Self {
        Correlation {
            edges: default_edges(),
            window_secs: default_window(),
            fleet_customers: Vec::new(),
            ttl_secs: default_ttl(),
        }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/mssp/controller.sock")
}
fn default_edges() -> usize {
    2
}
fn default_window() -> u64 {
    30
}
fn default_ttl() -> u64 {
    600
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let c: Config = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        if !["nats://", "tls://"]
            .iter()
            .any(|p| c.nats_url.starts_with(p))
        {
            return Err(format!(
                "{}: nats_url = {:?}: give tls://host:port (or nats:// for a lab broker)",
                path.display(),
                c.nats_url
            ));
        }
        if c.correlation.edges == 0 {
            return Err(format!(
                "{}: correlation.edges = 0: give 1 or more",
                path.display()
            ));
        }
        if c.correlation.ttl_secs < 10 {
            return Err(format!(
                "{}: correlation.ttl_secs = {}: give 10 or more",
                path.display(),
                c.correlation.ttl_secs
            ));
        }
        if c.user.is_some() != c.password_file.is_some() {
            return Err(format!(
                "{}: user and password_file go together",
                path.display()
            ));
        }
        Ok(c)
    }
}
