//! An edge's fleet client. It reads the decisions stream from the start (one message per
//! decision id: the current fleet state), then follows it; every message is verified with
//! the controller's key before it is parsed, applied through the [`Applier`] (the agent's
//! fleet layer, or nothing in the bench's simulators) and acknowledged. Across a broker
//! restart or a partition it resumes after the last stream sequence it processed, so no
//! decision is missed. Reports and heartbeats go up on their subjects.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use ed25519_dalek::VerifyingKey;
use futures_util::StreamExt;
use log::{info, warn};
use mssp_wire::fleet::{Ack, Decision, Heartbeat, Report};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::{FleetError, nats_err, sign, subjects};

/// Where and who: what `[fleet]` in the agent's config gives.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub nats_url: String,
    pub edge: String,
    pub controller_key: VerifyingKey,
    /// A NATS credentials file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS: the CA that signed the broker's certificate, and this edge's client pair.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub heartbeat: Duration,
}

/// What an edge does with a verified decision.
pub trait Applier: Send + Sync + 'static {
    /// Makes it (or its removal) true, or says why not. Called again with the same
    /// decision after a reconnect: must be idempotent by id and version.
    fn apply(&self, d: &Decision) -> Result<(), String>;
    fn central_version(&self) -> u64 {
        0
    }
}

/// What the client has done, for status and metrics.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub connected: AtomicBool,
    /// The highest decision version processed.
    pub fleet_version: AtomicU64,
    pub applied: AtomicU64,
    pub apply_failed: AtomicU64,
    /// Messages refused before parsing: not signed by the controller's key.
    pub bad_signature: AtomicU64,
}

/// What to run each time the connection is (re-)established.
pub type OnConnect = Arc<dyn Fn() + Send + Sync>;

/// Connects (retrying in the background until the broker answers); `on_connect` runs every
/// time the connection is (re-)established.
pub async fn connect(
    url: &str,
    name: &str,
    credentials: Option<&PathBuf>,
    user: Option<(&str, &str)>,
    tls: (Option<&PathBuf>, Option<&PathBuf>, Option<&PathBuf>),
    on_connect: Option<OnConnect>,
) -> Result<async_nats::Client, FleetError> {
    let events = on_connect.clone();
    let mut o = async_nats::ConnectOptions::new()
        .event_callback(move |e| {
            let events = events.clone();
            async move {
                match e {
                    async_nats::Event::Connected => {
                        info!("fleet: connected to the broker");
                        if let Some(f) = events {
                            f();
                        }
                    }
                    async_nats::Event::Disconnected => warn!("fleet: disconnected from the broker"),
                    _ => {}
                }
            }
        })
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_secs(5))
        // Back within a second of the broker being reachable again (the default backs off
        // to several seconds).
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 250).min(1000))
        })
        .max_reconnects(None);
    if let Some(c) = credentials {
        o = o.credentials_file(c).await.map_err(nats_err)?;
    }
    if let Some((u, p)) = user {
        o = o.user_and_password(u.into(), p.into());
    }
    if let Some(ca) = tls.0 {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (tls.1, tls.2) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    if url.starts_with("nats://") && credentials.is_none() && user.is_none() {
        warn!("fleet: {url} without TLS or credentials (a lab broker?)");
    }
    o.connect(url).await.map_err(nats_err)
}

/// Runs until `shutdown` turns true.
pub async fn run(
    cfg: EdgeConfig,
    applier: Arc<dyn Applier>,
    stats: Arc<EdgeStats>,
    mut reports: mpsc::Receiver<Report>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), FleetError> {
    let reconnected = Arc::new(tokio::sync::Notify::new());
    let client = connect(
        &cfg.nats_url,
        &format!("mssp-edge-{}", cfg.edge),
        cfg.credentials.as_ref(),
        cfg.user.as_deref().zip(cfg.password.as_deref()),
        (
            cfg.tls_ca.as_ref(),
            cfg.tls_cert.as_ref(),
            cfg.tls_key.as_ref(),
        ),
        Some({
            let n = reconnected.clone();
            Arc::new(move || n.notify_one())
        }),
    )
    .await?;
    let js = jetstream::new(client.clone());
    // Reports and heartbeats beside the decisions.
    let up = {
        let (client, cfg, stats, applier) =
            (client.clone(), cfg.clone(), stats.clone(), applier.clone());
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.heartbeat);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tick.tick() => {
                        let hb = Heartbeat {
                            edge: cfg.edge.clone(),
                            fleet_version: stats.fleet_version.load(Ordering::Relaxed),
                            central_version: applier.central_version(),
                            agent_version: env!("CARGO_PKG_VERSION").into(),
                            at: OffsetDateTime::now_utc(),
                        };
                        let _ = client.publish(subjects::heartbeat(&cfg.edge), serde_json::to_vec(&hb).unwrap_or_default().into()).await;
                    }
                    r = reports.recv() => match r {
                        Some(r) => {
                            let _ = client.publish(subjects::report(&cfg.edge), serde_json::to_vec(&r).unwrap_or_default().into()).await;
                        }
                        None => break,
                    },
                }
            }
        })
    };
    let mut next_seq = 1u64;
    let mut versions: HashMap<String, u64> = HashMap::new();
    while !*shutdown.borrow() {
        let follow = follow(&js, &cfg, &*applier, &stats, &mut next_seq, &mut versions);
        tokio::select! {
            _ = shutdown.changed() => break,
            // Back after a partition or a broker restart: follow again from where this
            // edge was, at once (rather than wait for the consumer to notice).
            _ = reconnected.notified() => {
                info!("fleet: resuming after decision stream sequence {}", next_seq - 1);
            }
            r = follow => {
                stats.connected.store(false, Ordering::Relaxed);
                if let Err(e) = r {
                    warn!("fleet: {e}; resuming after decision stream sequence {}", next_seq - 1);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    up.abort();
    Ok(())
}

/// Follows the decisions stream from `next_seq` until it fails.
async fn follow(
    js: &jetstream::Context,
    cfg: &EdgeConfig,
    applier: &dyn Applier,
    stats: &EdgeStats,
    next_seq: &mut u64,
    versions: &mut HashMap<String, u64>,
) -> Result<(), FleetError> {
    let stream = js.get_stream(subjects::DECISIONS).await.map_err(nats_err)?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subjects::DECISION_ALL.into(),
            deliver_policy: if *next_seq <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: *next_seq,
                }
            },
            ..Default::default()
        })
        .await
        .map_err(nats_err)?;
    let mut messages = consumer.messages().await.map_err(nats_err)?;
    stats.connected.store(true, Ordering::Relaxed);
    info!(
        "fleet: following decisions from stream sequence {next_seq} as edge {}",
        cfg.edge
    );
    while let Some(m) = messages.next().await {
        let m = m.map_err(nats_err)?;
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(*next_seq);
        let token = m
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_string();
        let (version, result) = match sign::verify(&cfg.controller_key, &m.payload) {
            Err(e) => {
                stats.bad_signature.fetch_add(1, Ordering::Relaxed);
                warn!("fleet: refused the message on {}: {e}", m.subject);
                (0, Err(e.to_string()))
            }
            Ok(d) if d.id != token => {
                stats.bad_signature.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "fleet: decision {} published on {}: refused",
                    d.id, m.subject
                );
                (
                    d.version,
                    Err(format!("decision {} on the subject of {token}", d.id)),
                )
            }
            Ok(d) if versions.get(&d.id).is_some_and(|v| *v > d.version) => {
                warn!(
                    "fleet: decision {} version {} is older than one applied: refused (a replay?)",
                    d.id, d.version
                );
                (d.version, Err("older than the version applied".into()))
            }
            Ok(d) => {
                let r = applier.apply(&d);
                match &r {
                    Ok(()) => {
                        stats.applied.fetch_add(1, Ordering::Relaxed);
                        versions.insert(d.id.clone(), d.version);
                    }
                    Err(e) => {
                        stats.apply_failed.fetch_add(1, Ordering::Relaxed);
                        warn!(
                            "fleet: decision {} version {} not applied: {e}",
                            d.id, d.version
                        );
                    }
                }
                stats.fleet_version.fetch_max(d.version, Ordering::Relaxed);
                (d.version, r)
            }
        };
        *next_seq = seq + 1;
        if subjects::valid_token(&token) {
            let ack = Ack {
                edge: cfg.edge.clone(),
                decision: token.clone(),
                version,
                fleet_version: stats.fleet_version.load(Ordering::Relaxed),
                ok: result.is_ok(),
                error: result.err(),
                at: OffsetDateTime::now_utc(),
            };
            let body = serde_json::to_vec(&ack).unwrap_or_default();
            js.publish(subjects::ack(&cfg.edge, &token), body.into())
                .await
                .map_err(nats_err)?;
        }
    }
    Err(FleetError::Nats("the decision stream ended".into()))
}
