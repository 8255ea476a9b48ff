//! The agent's end of the fleet: `[fleet]` in the config starts the fleet client
//! (`mssp-fleet`), which hands every verified decision to [`AgentFleet`] (the fleet layer,
//! published like a CLI edit) and carries the detector's attack reports upstream.

use std::sync::{Arc, atomic::Ordering};

use log::{error, info};
use mssp_core::dataplane::backend::MapBackend;
use mssp_fleet::edge::{Applier, EdgeConfig, EdgeStats};
use mssp_wire::fleet::Decision;
use tokio::sync::watch;

use crate::{Agent, config::FleetConfig};

pub struct AgentFleet<B: MapBackend> {
    agent: Arc<Agent<B>>,
}

impl<B: MapBackend + Send + 'static> Applier for AgentFleet<B> {
    fn apply(&self, d: &Decision) -> Result<(), String> {
        let r = self.agent.lock().set_fleet(d);
        self.agent.expiry_changed.notify_one();
        if r.is_ok() {
            info!(
                "fleet: decision {} v{} {} ({})",
                d.id,
                d.version,
                if d.removed { "withdrawn" } else { "in force" },
                d.reason
            );
        }
        r
    }

    fn central_version(&self) -> u64 {
        self.agent.lock().central_version()
    }
}

fn edge_config(f: &FleetConfig) -> Result<EdgeConfig, String> {
    let password = match &f.password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("fleet.password_file {}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok(EdgeConfig {
        nats_url: f.nats_url.clone(),
        edge: f.edge.clone(),
        controller_key: mssp_fleet::sign::load_public(&f.controller_key)
            .map_err(|e| e.to_string())?,
        credentials: f.credentials.clone(),
        user: f.user.clone(),
        password,
        tls_ca: f.tls_ca.clone(),
        tls_cert: f.tls_cert.clone(),
        tls_key: f.tls_key.clone(),
        heartbeat: std::time::Duration::from_secs(f.heartbeat_secs),
    })
}

/// Checks `[fleet]` before the agent touches the kernel (a missing key file is a config
/// error, not a surprise later).
pub fn check(f: &FleetConfig) -> Result<(), String> {
    edge_config(f).map(|_| ())
}

/// Runs the fleet client until `stop`.
pub async fn run<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    f: FleetConfig,
    stop: watch::Receiver<bool>,
) {
    let cfg = match edge_config(&f) {
        Ok(c) => c,
        Err(e) => {
            error!("fleet: {e}; not joining the fleet");
            return;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    *agent.ips.reports.lock().unwrap_or_else(|p| p.into_inner()) = Some((f.edge.clone(), tx));
    let stats: Arc<EdgeStats> = agent.fleet_stats.clone();
    let applier = Arc::new(AgentFleet {
        agent: agent.clone(),
    });
    info!("fleet: edge {} joining {}", f.edge, f.nats_url);
    if let Err(e) = mssp_fleet::edge::run(cfg, applier, stats.clone(), rx, stop).await {
        error!("fleet: {e}");
    }
    stats.connected.store(false, Ordering::Relaxed);
}
