//! `mssp controller`: the fleet's centre. It keeps no state of its own: decisions, acks,
//! heartbeats and attack reports live in JetStream streams (`mssp-fleet::subjects`), which it
//! tails into a [`state::FleetState`] at start and from then on, so a restart loses nothing
//! and a second controller with the same key can take over. Decisions are signed with the
//! controller's ed25519 key and published one subject per decision; edges apply and ack.
//!
//! * [`config`]: `controller.toml`.
//! * [`state`]: the fleet as the streams say it is; `fleet status`.
//! * [`correlate`]: attack reports → fleet decisions.
//! * [`api`]: the local API on a Unix socket (`mssp fleet ...`).

pub mod api;
pub mod config;
pub mod correlate;
pub mod state;

use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use log::{info, warn};
use mssp_fleet::{FleetError, nats_err, sign, subjects};
use mssp_wire::fleet::{Ack, Decision, DecisionItem, Heartbeat, Report};
use time::OffsetDateTime;

pub struct Controller {
    pub cfg: config::Config,
    js: jetstream::Context,
    key: SigningKey,
    pub state: Mutex<state::FleetState>,
    correlator: Mutex<correlate::Correlator>,
    /// Serialises publishing, so versions grow one by one.
    publish: tokio::sync::Mutex<u64>,
    /// Bumped at every (re)connection: the tails follow again from where they were.
    reconnects: tokio::sync::watch::Sender<u64>,
}

impl Controller {
    pub async fn connect(cfg: config::Config) -> Result<Arc<Controller>, FleetError> {
        let key = sign::load_signing(&cfg.signing_key)?;
        let password = match &cfg.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| FleetError::Key(format!("password_file {}: {e}", p.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let (reconnects, _) = tokio::sync::watch::channel(0u64);
        let bump = reconnects.clone();
        let client = mssp_fleet::edge::connect(
            &cfg.nats_url,
            "mssp-controller",
            cfg.credentials.as_ref(),
            cfg.user.as_deref().zip(password.as_deref()),
            (
                cfg.tls_ca.as_ref(),
                cfg.tls_cert.as_ref(),
                cfg.tls_key.as_ref(),
            ),
            Some(Arc::new(move || {
                bump.send_modify(|n| *n += 1);
            })),
        )
        .await?;
        let js = jetstream::new(client);
        // The broker may still be starting (retry_on_initial_connect): retry for a while.
        let mut tries = 0;
        loop {
            match subjects::ensure_streams(&js).await {
                Ok(()) => break,
                Err(e) if tries < 60 => {
                    tries += 1;
                    if tries % 10 == 1 {
                        warn!("creating the fleet streams: {e}; retrying");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::new(Controller {
            cfg,
            js,
            key,
            state: Mutex::new(state::FleetState::default()),
            correlator: Mutex::new(correlate::Correlator::default()),
            publish: tokio::sync::Mutex::new(0),
            reconnects,
        }))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, state::FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tails the four streams into the state; returns once the decisions are read up to
    /// where the stream was (versions continue from there).
    pub async fn follow(self: &Arc<Self>) -> Result<(), FleetError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let c = self.clone();
        let stream = self
            .js
            .get_stream(subjects::DECISIONS)
            .await
            .map_err(nats_err)?;
        let last = stream.cached_info().state.last_sequence;
        let public = self.key.verifying_key();
        if last == 0 {
            if let Some(t) = tx.take() {
                let _ = t.send(());
            }
        }
        self.tail(
            subjects::DECISIONS,
            subjects::DECISION_ALL,
            move |seq, bytes| {
                match sign::verify(&public, bytes) {
                    Ok(d) => c.lock().on_decision(d),
                    Err(e) => warn!("decision stream sequence {seq}: {e} (not ours; ignored)"),
                }
                if seq >= last {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
            },
        );
        let c = self.clone();
        self.tail(subjects::ACKS, subjects::ACK_ALL, move |_, b| {
            if let Ok(a) = serde_json::from_slice::<Ack>(b) {
                c.lock().on_ack(a);
            }
        });
        let c = self.clone();
        self.tail(subjects::EDGES, subjects::HEARTBEAT_ALL, move |_, b| {
            if let Ok(h) = serde_json::from_slice::<Heartbeat>(b) {
                c.lock().on_heartbeat(h);
            }
        });
        let c = self.clone();
        let fresh = OffsetDateTime::now_utc();
        self.tail(subjects::REPORTS, subjects::REPORT_ALL, move |_, b| {
            if let Ok(r) = serde_json::from_slice::<Report>(b) {
                let c2 = c.clone();
                // Reports older than this start are history, not news to act on.
                let act = r.attack.detected_at
                    > fresh - time::Duration::seconds(c.cfg.correlation.window_secs as i64);
                c.lock().on_report(r.clone());
                if act {
                    let now = OffsetDateTime::now_utc();
                    let p = c
                        .correlator
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .on_report(&r, &c.cfg.correlation, now);
                    if let Some(p) = p {
                        tokio::spawn(async move {
                            let ttl = time::Duration::seconds(c2.cfg.correlation.ttl_secs as i64);
                            match c2
                                .decide(
                                    p.id.clone(),
                                    Some(p.customer),
                                    p.item,
                                    ttl,
                                    p.reason.clone(),
                                    None,
                                )
                                .await
                            {
                                Ok(d) => {
                                    info!("fleet decision {} v{}: {}", d.id, d.version, d.reason)
                                }
                                Err(e) => warn!("publishing the decision for {}: {e}", p.id),
                            }
                        });
                    }
                }
            }
        });
        let _ = rx.await;
        let (v, n) = {
            let st = self.lock();
            (st.version(), st.decisions.len())
        };
        info!("fleet state read: version {v}, {n} decisions");
        Ok(())
    }

    /// Reads `stream` from its start, then follows it, handing each message to `f`;
    /// resumes after the last sequence when the connection drops.
    fn tail(
        self: &Arc<Self>,
        stream: &'static str,
        filter: &'static str,
        mut f: impl FnMut(u64, &[u8]) + Send + 'static,
    ) {
        let js = self.js.clone();
        let mut reconnects = self.reconnects.subscribe();
        tokio::spawn(async move {
            let mut next = 1u64;
            loop {
                reconnects.mark_unchanged();
                let follow = async {
                    let s = js.get_stream(stream).await.map_err(nats_err)?;
                    let consumer = s
                        .create_consumer(jetstream::consumer::pull::OrderedConfig {
                            filter_subject: filter.into(),
                            deliver_policy: if next <= 1 {
                                DeliverPolicy::All
                            } else {
                                DeliverPolicy::ByStartSequence {
                                    start_sequence: next,
                                }
                            },
                            ..Default::default()
                        })
                        .await
                        .map_err(nats_err)?;
                    let mut msgs = consumer.messages().await.map_err(nats_err)?;
                    while let Some(m) = msgs.next().await {
                        let m = m.map_err(nats_err)?;
                        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(next);
                        f(seq, &m.payload);
                        next = seq + 1;
                    }
                    Ok::<(), FleetError>(())
                };
                let r = tokio::select! {
                    r = follow => r,
                    _ = reconnects.changed() => Ok(()),
                };
                if let Err(e) = r {
                    warn!("{stream}: {e}; resuming after sequence {}", next - 1);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
    }

    /// Signs and publishes a decision (a new version of `id`), once JetStream has stored it.
    pub async fn decide(
        &self,
        id: String,
        customer: Option<u32>,
        item: DecisionItem,
        ttl: time::Duration,
        reason: String,
        comment: Option<String>,
    ) -> Result<Decision, FleetError> {
        let mut last = self.publish.lock().await;
        let now = OffsetDateTime::now_utc();
        let version = (*last).max(self.lock().version()) + 1;
        let d = Decision {
            id,
            version,
            customer,
            item,
            created: now,
            expires: now + ttl,
            removed: false,
            reason,
            comment,
        };
        self.publish_decision(&d).await?;
        *last = version;
        Ok(d)
    }

    /// Withdraws a decision: a new version of it, `removed`.
    pub async fn withdraw(&self, id: &str, who: &str) -> Result<Option<Decision>, FleetError> {
        let mut last = self.publish.lock().await;
        let Some(mut d) = self
            .lock()
            .decisions
            .get(id)
            .cloned()
            .filter(|d| !d.removed)
        else {
            return Ok(None);
        };
        d.version = (*last).max(self.lock().version()) + 1;
        d.removed = true;
        d.created = OffsetDateTime::now_utc();
        d.reason = format!("withdrawn by {who}");
        self.publish_decision(&d).await?;
        *last = d.version;
        Ok(Some(d))
    }

    async fn publish_decision(&self, d: &Decision) -> Result<(), FleetError> {
        let signed = sign::sign(&self.key, d);
        let body = serde_json::to_vec(&signed).map_err(|e| FleetError::Nats(e.to_string()))?;
        self.js
            .publish(subjects::decision(&d.id), body.into())
            .await
            .map_err(nats_err)?
            .await
            .map_err(nats_err)?;
        self.lock().on_decision(d.clone());
        Ok(())
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(
    cfg: config::Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let socket = cfg.socket.clone();
    let c = Controller::connect(cfg).await.map_err(|e| e.to_string())?;
    c.follow().await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660));
    }
    let status = {
        let st = c.lock();
        format!(
            "controller: fleet version {}, {} edges",
            st.version(),
            st.edges.len()
        )
    };
    info!("{status}; local API on {}", socket.display());
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ],
    );
    let watchdog = tokio::spawn(async {
        let mut usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            let mut t = tokio::time::interval(std::time::Duration::from_micros(usec / 2));
            loop {
                t.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        }
    });
    let pruner = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                t.tick().await;
                c.correlator
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .prune(&c.cfg.correlation, OffsetDateTime::now_utc());
            }
        })
    };
    let r = axum::serve(listener, api::router(c.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    watchdog.abort();
    pruner.abort();
    let _ = std::fs::remove_file(&socket);
    r.map_err(|e| e.to_string())
}
