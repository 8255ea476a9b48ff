//! The agent's lifecycle, in the mini-redis shape: [`run`] takes the listeners and the
//! shutdown signal as a future, so a test can run an agent in-process and stop it; [`main`]
//! is what `mssp agent` runs: start on the kernel, bind, serve until SIGTERM.

use std::{sync::Arc, time::Duration};

use log::{error, info, warn};
use mssp_core::dataplane::backend::MapBackend;
use time::OffsetDateTime;
use tokio::net::{TcpListener, UnixListener};

use crate::{
    Agent, AgentError, RunOptions, api,
    config::Config,
    metrics, push,
    serve::{self, Limits},
    views::metrics_snapshot,
};

/// What the agent serves on.
pub struct Listeners {
    /// The local API (NOC CLI).
    pub api: UnixListener,
    /// Prometheus.
    pub metrics: TcpListener,
    /// The push API (HTTPS, mutual TLS), when configured.
    pub push: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the config names. The push API's certificates are loaded into the agent.
    pub async fn bind<B: MapBackend>(
        agent: &Agent<B>,
        cfg: &Config,
    ) -> Result<Listeners, AgentError> {
        let push = match push::tls_config(cfg)? {
            Some(tls) => {
                *agent.push_tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(tls);
                let addr = cfg.push_listen.expect("tls_config checked push_listen");
                Some(TcpListener::bind(addr).await.map_err(|e| {
                    AgentError::Other(format!("push_listen {addr}: cannot bind: {e}"))
                })?)
            }
            None => None,
        };
        let metrics = TcpListener::bind(cfg.metrics_listen).await.map_err(|e| {
            AgentError::Other(format!("metrics_listen {}: {e}", cfg.metrics_listen))
        })?;
        let api = api::bind(cfg).map_err(AgentError::Other)?;
        Ok(Listeners { api, metrics, push })
    }
}

/// `mssp agent`: starts on the kernel, binds, and serves until `shutdown` resolves. The
/// filter stays in place afterwards.
pub async fn main(
    cfg: Config,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let opts2 = opts.clone();
    let agent = tokio::task::spawn_blocking(move || Agent::start(cfg, &opts2))
        .await
        .map_err(|e| AgentError::Other(format!("startup task: {e}")))??;
    let agent = Arc::new(agent);
    let cfg = agent.config();
    let listeners = Listeners::bind(&agent, &cfg).await?;
    let _ = opts;
    let r = run(agent, listeners, shutdown).await;
    let _ = std::fs::remove_file(&cfg.socket);
    r
}

/// Serves until `shutdown` resolves: the local API, metrics, the push API, the expiry
/// timer, the watchdog and SIGHUP.
pub async fn run<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let a = agent.clone();
    let registry = Arc::new(metrics::registry(move || {
        // The detector's lock and the state's are never held together.
        let detection = crate::ips::metrics(&a.ips);
        let state = a.lock();
        let mut s = metrics_snapshot(&a, &state);
        s.detection = detection;
        s
    }));

    // The push endpoint and metrics first: once the socket answers, everything does.
    let push = listeners
        .push
        .map(|l| tokio::spawn(push::serve(agent.clone(), l, stop_rx.clone())));
    let metrics = tokio::spawn(serve::tcp(
        listeners.metrics,
        metrics::router(registry),
        Limits::LOCAL,
        stop_rx.clone(),
    ));
    let api = tokio::spawn(serve::unix(
        listeners.api,
        api::router(agent.clone()),
        Limits::LOCAL,
        stop_rx.clone(),
    ));
    let expiry = tokio::spawn(expiry_loop(agent.clone(), stop_rx.clone()));
    let wake = Arc::new(tokio::sync::Notify::new());
    agent.lock().defer_reclaim(wake.clone());
    let reclaim = tokio::spawn(reclaim_loop(agent.clone(), wake, stop_rx.clone()));
    let watchdog = tokio::spawn(watchdog_loop(agent.clone(), stop_rx.clone()));
    let hup = tokio::spawn(hup_loop(agent.clone(), stop_rx.clone()));
    let retry = tokio::spawn(missing_interfaces_loop(agent.clone(), stop_rx.clone()));
    // The detector, when the data path's meters and samples are at hand (a kernel agent).
    let observer = agent
        .observer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let detector = observer.map(|(m, r)| crate::detector::start(agent.clone(), m, r));
    let fleet_cfg = agent
        .cfg
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .fleet
        .clone();
    let fleet =
        fleet_cfg.map(|f| tokio::spawn(crate::fleet::run(agent.clone(), f, stop_rx.clone())));
    let inspector = {
        let cfg = agent.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match (&agent.opts.config_path, cfg.customer_interfaces.is_empty()) {
            (Some(path), false) => Some(agent.filtering.start(
                path.clone(),
                cfg.state_dir.clone(),
                mssp_core::pins::Layout::new(&cfg.pin_dir).abi_dir(),
                Duration::from_secs(cfg.filtering.restart_secs),
                stop_rx.clone(),
            )),
            (None, false) => {
                log::warn!(
                    "customer_interfaces is set but the agent has no config file to give an inspector; filtering is off"
                );
                None
            }
            _ => None,
        }
    };

    {
        let state = agent.lock();
        let status = format!(
            "filtering {} (central policy v{}, {} local entries)",
            state
                .attached
                .iter()
                .map(|a| format!("{} ({})", a.name, a.mode))
                .collect::<Vec<_>>()
                .join(", "),
            state.central_version(),
            state.local.entries.len()
        );
        info!("{status}");
        // Loading state (a million-entry central.json) went through memory nothing holds now.
        crate::state::release_freed_memory();
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        );
    }

    shutdown.await;
    info!("shutting down; the filter stays attached with its last policy");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let grace = Duration::from_secs(5);
    let _ = tokio::time::timeout(grace, async {
        let _ = api.await;
        let _ = metrics.await;
        if let Some(p) = push {
            let _ = p.await;
        }
    })
    .await;
    drop(detector);
    if let Some(i) = inspector {
        agent.filtering.terminate();
        let _ = tokio::task::spawn_blocking(move || i.join()).await;
    }
    if let Some(f) = fleet {
        f.abort();
    }
    expiry.abort();
    reclaim.abort();
    // What the last apply replaced, so the id log records its releases before exit.
    let a = agent.clone();
    let _ = tokio::task::spawn_blocking(move || a.lock().reclaim()).await;
    watchdog.abort();
    hup.abort();
    retry.abort();
    Ok(())
}

async fn expiry_loop<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let next = agent.lock().next_expiry();
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            let d = (t - OffsetDateTime::now_utc()).whole_milliseconds().max(0) as u64;
            Duration::from_millis(d + 5)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                let a = agent.clone();
                let r = tokio::task::spawn_blocking(move || a.lock().expire()).await;
                if let Ok(Err(e)) = r {
                    error!("removing expired entries: {e}");
                }
            }
            _ = agent.expiry_changed.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Reclaims after an apply has answered, waiting for the RCU barrier (~10 ms) without the
/// agent's lock, so the next CLI edit does not queue behind it.
async fn reclaim_loop<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.changed() => return,
        }
        let a = agent.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let (ticket, barrier) = {
                let mut s = a.lock();
                let Some(t) = s.dp.take_reclaim() else {
                    return;
                };
                match s.dp.backend().detached_barrier() {
                    Some(b) => (t, b),
                    None => {
                        let r = s.dp.backend_mut().barrier();
                        s.finish_reclaim(t, r);
                        return;
                    }
                }
            };
            let r = barrier();
            a.lock().finish_reclaim(ticket, r);
            log::debug!("reclaimed in {:?}", started.elapsed());
        })
        .await;
    }
}

/// Systemd's watchdog: pings only while the agent's lock can be taken, so a wedged agent is
/// restarted (the filter keeps running meanwhile).
async fn watchdog_loop<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                let a = agent.clone();
                let healthy = tokio::time::timeout(every, tokio::task::spawn_blocking(move || { drop(a.lock()); })).await.is_ok();
                if healthy {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                } else {
                    warn!("agent lock busy for {every:?}; not pinging the watchdog");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Configured interfaces that did not exist are attached once they appear.
async fn missing_interfaces_loop<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
        let a = agent.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut state = a.lock();
            if !state
                .missing
                .iter()
                .any(|m| mssp_core::pins::interface_exists(m))
            {
                return;
            }
            let spec = a.config().pin_spec();
            let modes: std::collections::HashMap<String, String> = state
                .attached
                .iter()
                .map(|x| (x.name.clone(), x.mode.clone()))
                .collect();
            match state.host.attach(&spec, &modes, true) {
                Ok(r) if r.missing.len() < state.missing.len() => {
                    info!(
                        "interfaces appeared; now filtering {}",
                        r.attached
                            .iter()
                            .map(|x| x.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    state.store.save_links(
                        &r.attached
                            .iter()
                            .map(|x| (x.name.clone(), x.mode.clone()))
                            .collect(),
                    );
                    state.attached = r.attached;
                    state.missing = r.missing;
                }
                Ok(_) => {}
                Err(e) => warn!("attaching interfaces that appeared: {e}"),
            }
        })
        .await;
    }
}

async fn hup_loop<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let a = agent.clone();
                match tokio::task::spawn_blocking(move || a.reload("SIGHUP")).await {
                    Ok(Ok(msg)) => info!("reload: {msg}"),
                    Ok(Err(e)) => error!("reload failed: {e}"),
                    Err(e) => error!("reload task: {e}"),
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            _ = stop.changed() => return,
        }
    }
}
