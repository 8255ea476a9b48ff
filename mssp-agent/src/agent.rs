//! The agent: its configuration, its lock on the state directory, and the [`AgentState`]
//! behind a mutex. [`Agent::start`] brings up the kernel side (state, pins, maps, links);
//! [`Agent::in_memory`] the same agent over in-memory maps, so the local API and metrics are
//! tested without root. Stopping the agent never stops the filter: the links are pinned.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use log::info;
use mssp_core::{
    capacity::Capacities,
    dataplane::{
        Dataplane,
        backend::{MapBackend, MemBackend},
        kernel::KernelBackend,
    },
    pins::{self, Attached},
    policy::{Capacity, Policy, document_digest, parse_policy},
};
use time::OffsetDateTime;

use crate::{
    config::Config,
    error::AgentError,
    host::{Host, KernelHost, NoHost},
    idlog::IdLog,
    state::{AgentState, Origin},
    store::{CentralMeta, Store},
    tls,
};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Replace pins of another ABI or map shape (hitless: swapped under the links).
    pub replace_pins: bool,
}

pub struct Agent<B: MapBackend> {
    pub cfg: Mutex<Config>,
    /// How it was started (the config file a reload re-reads).
    pub opts: RunOptions,
    state: Mutex<AgentState<B>>,
    pub started: OffsetDateTime,
    /// Wakes the expiry task when the set of expiries changes.
    pub expiry_changed: tokio::sync::Notify,
    /// The push API's TLS settings; replaced when a reload finds new certificate files.
    pub push_tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
    /// Attack detection: the engine, the attack history, the live sample stream.
    pub ips: crate::ips::Ips,
    /// The data path's meters and sample ring, until `run` hands them to the detector.
    pub observer: Mutex<Option<(mssp_core::observe::Meters, mssp_core::observe::SampleRing)>>,
    /// The fleet client's counters (connected, fleet version, refused signatures).
    pub fleet_stats: Arc<mssp_fleet::edge::EdgeStats>,
    /// Content filtering's inspector process.
    pub filtering: Arc<crate::filtering::supervisor::Supervisor>,
    _lock: File,
}

fn lock_state_dir(dir: &Path) -> Result<File, AgentError> {
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

/// What the state directory holds, read and checked before anything in the kernel is touched.
struct Loaded {
    store: Store,
    lock: File,
    central: Option<CentralMeta>,
    policy: Policy,
    local: crate::store::LocalFile,
    idlog: IdLog,
    ids: mssp_core::dataplane::IdTable,
}

fn load_state(cfg: &Config) -> Result<Loaded, AgentError> {
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
                digest: document_digest(&bytes),
                applied_at: OffsetDateTime::now_utc(),
                source: Some(format!("file {}", path.display())),
            },
            p,
        ));
    }
    let (central, policy) = match central {
        Some((f, p)) => (Some(f), p),
        None => (None, Policy::empty()),
    };
    Ok(Loaded {
        store,
        lock,
        central,
        policy,
        local,
        idlog,
        ids,
    })
}

fn modes_of(attached: &[Attached]) -> HashMap<String, String> {
    attached
        .iter()
        .map(|a| (a.name.clone(), a.mode.clone()))
        .collect()
}

impl<B: MapBackend> Agent<B> {
    /// Publishes the loaded policy, attaches, and wraps it all up.
    fn assemble(
        cfg: Config,
        opts: RunOptions,
        mut l: Loaded,
        dp: Dataplane<B>,
        host: Box<dyn Host>,
        observer: Option<(mssp_core::observe::Meters, mssp_core::observe::SampleRing)>,
    ) -> Result<Agent<B>, AgentError> {
        // Active attacks resume with their mitigations, published with everything else.
        let ips = crate::ips::Ips::new(&cfg.state_dir, cfg.engine_config())?;
        let auto = ips.lock().engine.auto_items();
        // Local entries that expired while no agent ran are gone (the data path stopped
        // enforcing them on time; the listing must not show them).
        let now = OffsetDateTime::now_utc();
        let before = l.local.entries.len();
        l.local
            .entries
            .retain(|e| e.expires.is_none_or(|t| t > now));
        let pruned = before - l.local.entries.len();
        let mut fleet = l.store.load_fleet()?;
        fleet.retain(|d| d.expires > now && !d.removed);
        let mut state = AgentState {
            dp,
            host,
            central: l.central,
            policy: l.policy,
            local: l.local,
            idlog: l.idlog,
            store: l.store,
            attached: Vec::new(),
            missing: Vec::new(),
            last_apply: None,
            last_error: None,
            auto,
            fleet,
            detection: Default::default(),
            protected: Default::default(),
            filter_table: None,
            central_desired: None,
            policy_gen: 0,
            filter_inputs: None,
            reclaim_wake: None,
            central_expiries: None,
        };
        // Policy into the maps before any new attachment, so a new link never filters with
        // an empty policy; an adopted link keeps the old program until the swap below.
        state.apply("start")?;
        if let Some(c) = &state.central {
            state.store.save_central(c, &state.policy.doc)?;
            state.policy.slim_doc();
        }
        if pruned > 0 {
            info!("{pruned} local entries expired while no agent ran; removed");
            state.store.save_local(&state.local)?;
        }
        let modes = state.store.load_links();
        // Degraded rather than down: interfaces that do not exist yet are retried.
        let r = state.host.attach(&cfg.pin_spec(), &modes, true)?;
        state.store.save_links(&modes_of(&r.attached));
        state.attached = r.attached;
        state.missing = r.missing;
        Ok(Agent {
            cfg: Mutex::new(cfg),
            opts,
            state: Mutex::new(state),
            started: OffsetDateTime::now_utc(),
            expiry_changed: tokio::sync::Notify::new(),
            push_tls: Mutex::new(None),
            ips,
            observer: Mutex::new(observer),
            fleet_stats: Default::default(),
            filtering: Default::default(),
            _lock: l.lock,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, AgentState<B>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Config {
        self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the config (interfaces can change live), the policy file (applied as the
    /// central policy if its version is newer than the one held) and the push certificates.
    /// Everything is read and checked first; then it applies wholly or changes nothing, and
    /// the reply says which.
    pub fn reload(&self, who: &str) -> Result<String, AgentError> {
        let r = self.reload_inner();
        if let Err(e) = &r {
            self.lock().last_error = Some(format!("reload: {e}"));
        }
        crate::audit::record(&crate::audit::Event {
            who,
            what: "reload",
            target: match &r {
                Ok(m) => serde_json::Value::String(m.clone()),
                Err(_) => serde_json::Value::Null,
            },
            comment: None,
            result: crate::audit::outcome(&r),
        });
        r
    }

    fn reload_inner(&self) -> Result<String, AgentError> {
        let Some(path) = &self.opts.config_path else {
            return Ok("no config file to re-read; nothing changed".into());
        };
        let nothing = |e: AgentError| AgentError::Other(format!("{e}; nothing changed"));
        // 1. Read and check everything; nothing changes yet.
        let new = Config::load(path).map_err(|e| nothing(e.into()))?;
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
        let policy_file = match &new.policy {
            Some(p) => Some((
                p.clone(),
                read_policy_file(p, &old.policy_capacity()).map_err(nothing)?,
            )),
            None => None,
        };
        let has_tls = self
            .push_tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let tls = match (&new.tls_cert, &new.tls_key, &new.client_ca) {
            (Some(cert), Some(key), Some(ca)) if has_tls => Some(Arc::new(
                tls::server_config(cert, key, ca)
                    .map_err(|e| nothing(AgentError::Other(format!("push TLS: {e}"))))?,
            )),
            _ => None,
        };
        let interfaces_changed = new.interfaces != old.interfaces;
        let spec = new.pin_spec();
        if interfaces_changed {
            pins::check_interfaces(&spec).map_err(|e| nothing(e.into()))?;
        }

        // 2. Apply: the policy (undone by set_central itself if it fails), then the
        // interfaces (the policy put back if they fail).
        let mut state = self.lock();
        let mut previous: Option<(Policy, Option<CentralMeta>)> = None;
        if let Some((p, (bytes, policy))) = policy_file {
            let held = state.central_version();
            if policy.version > held {
                let origin = Origin {
                    digest: document_digest(&bytes),
                    source: format!("file {} (reload)", p.display()),
                };
                let whole = state
                    .policy_with_whole_doc()
                    .map_err(|e| nothing(e.into()))?;
                let before = (whole, state.central.clone());
                state
                    .set_central(policy, &bytes, origin, "reload")
                    .map_err(nothing)?;
                previous = Some(before);
                notes.push(format!(
                    "policy file {} applied (version {held} -> {})",
                    p.display(),
                    state.central_version()
                ));
            } else {
                notes.push(format!(
                    "policy file {} has version {}, not newer than the {held} held; kept",
                    p.display(),
                    policy.version
                ));
            }
        }
        if interfaces_changed {
            let modes = modes_of(&state.attached);
            match state.host.attach(&spec, &modes, false) {
                Ok(r) => {
                    state.store.save_links(&modes_of(&r.attached));
                    state.attached = r.attached;
                    state.missing = r.missing;
                    notes.push("interfaces updated".into());
                }
                Err(e) => {
                    // Back to the old set (attach_all puts back what it changed) and policy.
                    if let Ok(r) = state.host.attach(&old.pin_spec(), &modes, true) {
                        state.attached = r.attached;
                        state.missing = r.missing;
                    }
                    if let Some((policy, meta)) = previous {
                        state.restore_central(policy, meta);
                    }
                    return Err(nothing(e.into()));
                }
            }
        }
        drop(state);
        if let Some(t) = tls {
            *self.push_tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            notes.push("push TLS certificates re-read".into());
        }
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = new;
        self.expiry_changed.notify_one();
        Ok(if notes.is_empty() {
            "nothing changed".into()
        } else {
            notes.join("; ")
        })
    }
}

impl Agent<KernelBackend> {
    /// Everything up to "filtering with the policy in force": state, pins, maps, links.
    /// Synchronous; no request is served before it returns.
    pub fn start(cfg: Config, opts: &RunOptions) -> Result<Agent<KernelBackend>, AgentError> {
        let l = load_state(&cfg)?;
        // The pins are this agent's alone: a second agent on the same pin_dir would take
        // over the filter (and the first would go on reporting its own policy as enforced).
        pins::prepare_dir(&cfg.pin_dir)?;
        let lock = pins::lock(&cfg.pin_dir)?;
        let (mut ebpf, existing) = pins::load(&cfg.pin_spec(), opts.replace_pins)?;
        let backend = KernelBackend::from_ebpf(&mut ebpf)
            .map_err(|e| AgentError::Other(format!("opening the maps: {e}")))?;
        let observer = mssp_core::observe::take(&mut ebpf)
            .map_err(|e| AgentError::Other(format!("opening the meters and samples: {e}")))?;
        let dp = if existing && !opts.replace_pins {
            Dataplane::adopt(backend, &l.ids)?
        } else {
            Dataplane::new(backend)
        };
        if existing {
            info!(
                "adopted the pinned maps: {} customers live",
                dp.customers().len()
            );
        }
        let pin_dir = cfg.pin_dir.clone();
        let agent = Self::assemble(
            cfg,
            opts.clone(),
            l,
            dp,
            Box::new(KernelHost {
                ebpf,
                lock,
                tracer: None,
            }),
            Some(observer),
        )?;
        if opts.replace_pins {
            pins::retire_old(&pin_dir);
        }
        Ok(agent)
    }
}

impl Agent<MemBackend> {
    /// The same agent over in-memory maps of `caps`, attached nowhere: the state directory,
    /// layers, API and metrics all behave as on a router (unit tests, no root).
    pub fn in_memory(cfg: Config, caps: Capacities) -> Result<Agent<MemBackend>, AgentError> {
        let l = load_state(&cfg)?;
        let dp = Dataplane::adopt(MemBackend::new(caps), &l.ids)?;
        Self::assemble(cfg, RunOptions::default(), l, dp, Box::new(NoHost), None)
    }
}
