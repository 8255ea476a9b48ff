//! `mssp agent`: the daemon on each edge router. It adopts (or creates) the pinned data plane,
//! keeps the two policy layers (central pushes, local CLI edits) in the state directory,
//! publishes their union, and serves the NOC's CLI, the metrics endpoint and the push API.
//!
//! Lifecycle as in mini-redis: [`run`] takes the shutdown signal as a future, so tests can
//! stop an agent in-process. Stopping the agent never stops the filter: the links are pinned.

pub mod api;
pub mod push;
pub mod store;
pub mod views;

use std::{
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use aya::Ebpf;
use log::{error, info, warn};
use store::{CentralMeta, IdLog, LocalEntry, LocalFile, StateError, Store};
use time::OffsetDateTime;

use crate::{
    config::{Config, ConfigError},
    dataplane::{
        AdoptError, ApplyStats, Clock, Dataplane, DataplaneError, Desired, DesiredEntry, Layer,
        Scope, kernel::KernelBackend,
    },
    pins::{self, Attached, PinError},
    policy::{Capacity, Policy, parse_policy},
};

/// Exit codes (sysexits): bad config 64, bad state or policy data 65, pins we must not
/// touch 75 (temporary: needs an operator), anything else 1.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("initial policy {file}: {message}")]
    InitialPolicy { file: String, message: String },
    #[error("{0}")]
    Pins(#[from] PinError),
    #[error("{0}")]
    Adopt(#[from] AdoptError),
    #[error("publishing the policy failed: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("{0}")]
    Other(String),
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) => 64,
            AgentError::State(_) | AgentError::InitialPolicy { .. } => 65,
            AgentError::Pins(PinError::Incompatible { .. } | PinError::MapMismatch { .. })
            | AgentError::Adopt(_) => 75,
            _ => 1,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Replace pins of another ABI or map shape (hitless: swapped under the links).
    pub replace_pins: bool,
}

/// The last successful apply.
#[derive(Clone, Debug)]
pub struct LastApply {
    pub at: OffsetDateTime,
    pub duration: Duration,
    pub stats: ApplyStats,
    pub trigger: String,
}

/// Everything behind the agent's lock: one writer at a time (pushes and CLI edits are
/// serialised), readers briefly.
pub struct Inner {
    pub dp: Dataplane<KernelBackend>,
    _ebpf: Ebpf,
    pub central: Option<CentralMeta>,
    pub policy: Policy,
    pub local: LocalFile,
    idlog: IdLog,
    pub store: Store,
    pub attached: Vec<Attached>,
    pub last_apply: Option<LastApply>,
    pub last_error: Option<String>,
}

pub struct Agent {
    pub cfg: Mutex<Config>,
    inner: Mutex<Inner>,
    pub started: OffsetDateTime,
    /// Wakes the expiry task when the set of expiries changes.
    pub expiry_changed: tokio::sync::Notify,
    /// The push API's TLS settings; replaced when SIGHUP finds new certificate files.
    pub push_tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
    _lock: File,
}

/// The union of both layers: local entries join the central ones; where both name the same
/// prefix in the same list, the local one is enforced (see [`Desired::effective`]). Local
/// entries of a customer the central policy does not have are kept but not enforced.
pub fn desired(policy: &Policy, local: &LocalFile) -> Desired {
    let mut d = Desired::from_policy(policy);
    for r in &local.rules {
        let Some(c) = d.customers.iter_mut().find(|c| c.id == r.customer) else {
            continue;
        };
        let mut errors = Vec::new();
        if let Some(spec) = crate::policy::rules::rule(&r.rule, "rule", &c.prefixes, &mut errors) {
            c.rules.push(crate::dataplane::DesiredRule {
                spec,
                layer: Layer::Local,
            });
        }
    }
    for e in &local.entries {
        let de = DesiredEntry {
            net: e.net(),
            action: e.action.action(),
            expires: e.expires,
            layer: Layer::Local,
        };
        match e.scope.scope() {
            Scope::Global => d.global.push(de),
            Scope::Customer(id) => {
                if let Some(c) = d.customers.iter_mut().find(|c| c.id == id) {
                    c.entries.push(de);
                }
            }
        }
    }
    d
}

fn lock_state_dir(dir: &std::path::Path) -> Result<File, AgentError> {
    let path = dir.join("agent.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| AgentError::Other(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(AgentError::Other(format!(
            "another mssp agent (pid {}) is using {}; stop it first",
            holder.trim(),
            dir.display()
        )));
    }
    let _ = std::fs::write(&path, std::process::id().to_string());
    Ok(f)
}

impl Agent {
    /// Everything up to "filtering with the policy in force": state, pins, maps, links.
    /// Synchronous; no request is served before it returns.
    pub fn start(cfg: Config, opts: &RunOptions) -> Result<Agent, AgentError> {
        let store = Store::open(&cfg.state_dir)?;
        let lock = lock_state_dir(&cfg.state_dir)?;
        let cap = cfg.policy_capacity();
        // State first: a corrupt file stops us before anything in the kernel is touched.
        let mut central = store.load_central(&cap)?;
        let local = store.load_local()?;
        let (idlog, ids) = IdLog::open(&store.ids_path())?;
        if central.is_none()
            && let Some(path) = &cfg.policy
        {
            let (bytes, p) = read_policy_file(path, &cap)?;
            info!("initial policy {} (version {})", path.display(), p.version);
            central = Some((
                CentralMeta {
                    version: p.version,
                    digest: crate::tls::digest(&bytes),
                    applied_at: OffsetDateTime::now_utc(),
                    source: Some(format!("file {}", path.display())),
                },
                p,
            ));
        }
        let (central_file, policy) = match central {
            Some((f, p)) => (Some(f), p),
            None => (None, Policy::empty()),
        };

        let (mut ebpf, existing) = pins::load(&cfg, opts.replace_pins)?;
        let backend = KernelBackend::from_ebpf(&mut ebpf)
            .map_err(|e| AgentError::Other(format!("opening the maps: {e}")))?;
        let dp = if existing && !opts.replace_pins {
            Dataplane::adopt(backend, &ids)?
        } else {
            Dataplane::new(backend)
        };
        if existing {
            info!(
                "adopted the pinned maps: {} customers live",
                dp.customers().len()
            );
        }
        let mut inner = Inner {
            dp,
            _ebpf: ebpf,
            central: central_file,
            policy,
            local,
            idlog,
            store,
            attached: Vec::new(),
            last_apply: None,
            last_error: None,
        };
        // Policy into the maps before any new attachment, so a new link never filters with
        // an empty policy; an adopted link keeps the old program until the swap below.
        inner.apply("start")?;
        if let Some(c) = &inner.central {
            inner.store.save_central(c, &inner.policy.doc)?;
        }
        let modes = inner.store.load_links();
        let attached = pins::attach_all(&mut inner._ebpf, &cfg, &modes)?;
        let modes: HashMap<String, String> = attached
            .iter()
            .map(|a| (a.name.clone(), a.mode.clone()))
            .collect();
        inner.store.save_links(&modes);
        inner.attached = attached;
        if opts.replace_pins {
            pins::retire_old(&cfg.pin_dir);
        }
        Ok(Agent {
            cfg: Mutex::new(cfg),
            inner: Mutex::new(inner),
            started: OffsetDateTime::now_utc(),
            expiry_changed: tokio::sync::Notify::new(),
            push_tls: Mutex::new(None),
            _lock: lock,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Config {
        self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGHUP: re-read the config (interfaces can change live) and the initial policy file
    /// (applied as a central policy if its version is newer than the one held).
    pub fn reload(&self, opts: &RunOptions) -> Result<String, AgentError> {
        let Some(path) = &opts.config_path else {
            return Ok("no config file to re-read".into());
        };
        let new = Config::load(path)?;
        let old = self.config();
        let mut notes = Vec::new();
        for (what, changed) in [
            ("pin_dir", new.pin_dir != old.pin_dir),
            ("state_dir", new.state_dir != old.state_dir),
            ("socket", new.socket != old.socket),
            ("metrics_listen", new.metrics_listen != old.metrics_listen),
            ("push_listen", new.push_listen != old.push_listen),
            ("capacity", new.capacity != old.capacity),
        ] {
            if changed {
                notes.push(format!("{what} changed: takes effect at the next restart"));
            }
        }
        let mut inner = self.lock();
        if new.interfaces != old.interfaces {
            let modes: HashMap<String, String> = inner
                .attached
                .iter()
                .map(|a| (a.name.clone(), a.mode.clone()))
                .collect();
            let attached = pins::attach_all(&mut inner._ebpf, &new, &modes)?;
            let modes: HashMap<String, String> = attached
                .iter()
                .map(|a| (a.name.clone(), a.mode.clone()))
                .collect();
            inner.store.save_links(&modes);
            inner.attached = attached;
            notes.push("interfaces updated".into());
        }
        if let Some(p) = &new.policy {
            let (bytes, policy) = read_policy_file(p, &new.policy_capacity())?;
            let held = inner.central.as_ref().map_or(0, |c| c.version);
            if policy.version > held {
                let origin = Origin {
                    digest: crate::tls::digest(&bytes),
                    source: format!("file {} (SIGHUP)", p.display()),
                };
                inner.set_central(policy, origin, "reload")?;
                notes.push(format!(
                    "policy file {} applied (version {held} -> {})",
                    p.display(),
                    inner.central_version()
                ));
            } else {
                notes.push(format!(
                    "policy file {} has version {}, not newer than the {held} held; kept",
                    p.display(),
                    policy.version
                ));
            }
        }
        drop(inner);
        // Certificates are read again (rotation): new connections use them; if they do not
        // load, the ones in use stay.
        let mut tls = self.push_tls.lock().unwrap_or_else(|e| e.into_inner());
        if tls.is_some()
            && let (Some(cert), Some(key), Some(ca)) = (&new.tls_cert, &new.tls_key, &new.client_ca)
        {
            match crate::tls::server_config(cert, key, ca) {
                Ok(c) => {
                    *tls = Some(Arc::new(c));
                    notes.push("push TLS certificates re-read".into());
                }
                Err(e) => notes.push(format!(
                    "push TLS certificates not re-read, the current ones stay: {e}"
                )),
            }
        }
        drop(tls);
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = new;
        self.expiry_changed.notify_one();
        Ok(if notes.is_empty() {
            "nothing changed".into()
        } else {
            notes.join("; ")
        })
    }
}

/// The `policy` file of the config: its bytes (for the digest) and the validated policy.
fn read_policy_file(path: &Path, cap: &Capacity) -> Result<(Vec<u8>, Policy), AgentError> {
    let failed = |message: String| AgentError::InitialPolicy {
        file: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| failed(format!("cannot read: {e}")))?;
    let policy = parse_policy(&bytes, cap).map_err(|e| failed(e.to_string()))?;
    Ok((bytes, policy))
}

/// Where a central policy came from: the digest of its bytes and who sent it.
#[derive(Clone, Debug)]
pub struct Origin {
    pub digest: String,
    pub source: String,
}

impl Inner {
    /// Publishes the union of both layers (only what changed is rewritten).
    pub fn apply(&mut self, trigger: &str) -> Result<ApplyStats, DataplaneError> {
        let started = Instant::now();
        let d = desired(&self.policy, &self.local);
        log::debug!("apply: desired state in {:?}", started.elapsed());
        let idlog = &mut self.idlog;
        let r = self
            .dp
            .apply_journaled(&d, &Clock::now(), &mut |j| idlog.record(j));
        match &r {
            Ok(stats) => {
                self.last_apply = Some(LastApply {
                    at: OffsetDateTime::now_utc(),
                    duration: started.elapsed(),
                    stats: stats.clone(),
                    trigger: trigger.into(),
                });
                self.last_error = None;
                // The table is built only when the log is due (it is a million rows at most).
                if self.idlog.needs_compaction(self.dp.assignments())
                    && let Err(e) = self.idlog.maybe_compact(&self.dp.id_table())
                {
                    warn!("compacting the id log: {e}");
                }
                log::debug!("apply: done in {:?}", started.elapsed());
            }
            Err(e) => self.last_error = Some(format!("{trigger}: {e}")),
        }
        r
    }

    /// Replaces the central layer: applied first, then persisted, so what the state
    /// directory holds is always something that was enforced. If it cannot be persisted, the
    /// previous policy is put back (a restart would otherwise silently roll back to it).
    pub fn set_central(
        &mut self,
        policy: Policy,
        origin: Origin,
        trigger: &str,
    ) -> Result<ApplyStats, AgentError> {
        let old = std::mem::replace(&mut self.policy, policy);
        let stats = match self.apply(trigger) {
            Ok(stats) => stats,
            Err(e) => {
                self.policy = old;
                return Err(e.into());
            }
        };
        let meta = CentralMeta {
            version: self.policy.version,
            digest: origin.digest,
            applied_at: OffsetDateTime::now_utc(),
            source: Some(origin.source),
        };
        let t = Instant::now();
        let saved = self.store.save_central(&meta, &self.policy.doc);
        log::debug!("central policy persisted in {:?}", t.elapsed());
        if let Err(e) = saved {
            error!("{e}; putting the previous central policy back");
            self.policy = old;
            if let Err(e2) = self.apply("rollback") {
                error!("re-applying the previous central policy failed too: {e2}");
            }
            return Err(e.into());
        }
        self.central = Some(meta);
        Ok(stats)
    }

    /// Replaces the local layer: applied first, persisted once enforced; on failure the old
    /// layer stays in force and in memory.
    pub fn set_local(&mut self, local: LocalFile, trigger: &str) -> Result<ApplyStats, AgentError> {
        let old = std::mem::replace(&mut self.local, local);
        match self.apply(trigger) {
            Ok(stats) => {
                self.store.save_local(&self.local)?;
                Ok(stats)
            }
            Err(e) => {
                self.local = old;
                Err(e.into())
            }
        }
    }

    pub fn central_version(&self) -> u64 {
        self.central.as_ref().map_or(0, |c| c.version)
    }

    /// Drops local entries that have expired (the data path stopped enforcing them at their
    /// expiry already) and republishes, so the maps and listings match.
    pub fn expire(&mut self) -> Result<(), AgentError> {
        let now = OffsetDateTime::now_utc();
        let before = self.local.entries.len();
        let mut local = self.local.clone();
        local.entries.retain(|e| e.expires.is_none_or(|t| t > now));
        if local.entries.len() != before {
            info!("{} local entries expired", before - local.entries.len());
            self.set_local(local, "expiry")?;
        } else {
            self.apply("expiry")?;
        }
        Ok(())
    }

    /// When the next entry of either layer expires.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        desired(&self.policy, &self.local).next_expiry(OffsetDateTime::now_utc())
    }
}

/// Runs the agent until `shutdown` resolves. The filter stays in place afterwards.
pub async fn run(
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // The push endpoint and metrics first: once the socket answers, everything does.
    let push = push::serve(agent.clone(), &cfg, stop_rx.clone()).await?;
    let metrics = crate::metrics::serve(agent.clone(), cfg.metrics_listen, stop_rx.clone())
        .await
        .map_err(AgentError::Other)?;
    let api = api::serve_unix(agent.clone(), &cfg, stop_rx.clone())
        .await
        .map_err(AgentError::Other)?;

    let expiry = tokio::spawn(expiry_loop(agent.clone(), stop_rx.clone()));
    let watchdog = tokio::spawn(watchdog_loop(agent.clone(), stop_rx.clone()));
    let hup = tokio::spawn(hup_loop(agent.clone(), opts.clone(), stop_rx.clone()));

    {
        let inner = agent.lock();
        let status = format!(
            "filtering {} (central policy v{}, {} local entries)",
            inner
                .attached
                .iter()
                .map(|a| format!("{} ({})", a.name, a.mode))
                .collect::<Vec<_>>()
                .join(", "),
            inner.central_version(),
            inner.local.entries.len()
        );
        info!("{status}");
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
    expiry.abort();
    watchdog.abort();
    hup.abort();
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}

async fn expiry_loop(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
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

/// Systemd's watchdog: pings only while the agent's lock can be taken, so a wedged agent is
/// restarted (the filter keeps running meanwhile).
async fn watchdog_loop(agent: Arc<Agent>, mut stop: tokio::sync::watch::Receiver<bool>) {
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

async fn hup_loop(
    agent: Arc<Agent>,
    opts: RunOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let (a, o) = (agent.clone(), opts.clone());
                match tokio::task::spawn_blocking(move || a.reload(&o)).await {
                    Ok(Ok(msg)) => info!("reload: {msg}"),
                    Ok(Err(e)) => error!("reload failed, nothing changed: {e}"),
                    Err(e) => error!("reload task: {e}"),
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            _ = stop.changed() => return,
        }
    }
}

/// Convenience for tests and the CLI: the local entries for a list.
pub fn local_entries_of(local: &LocalFile, scope: Scope) -> Vec<&LocalEntry> {
    local
        .entries
        .iter()
        .filter(|e| e.scope.scope() == scope)
        .collect()
}
