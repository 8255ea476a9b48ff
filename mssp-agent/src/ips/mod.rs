//! The agent's side of attack detection (mssp-detect decides), as state: the engine, the
//! attack history in the state directory, the live sample stream, what the detector reads
//! of the layers ([`settings`]). The threads that drive it are in `detector`; what the
//! NOC's live views print is in `live`.

pub mod settings;
pub mod store;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use mssp_detect::{Engine, EngineConfig, Observed, engine::Now, rates::Rates};
use prometheus_client::metrics::histogram::Histogram;

use self::store::AttackStore;

/// What the detector shares with the API and metrics. Never held together with the
/// agent's state lock (take one, release it, take the other).
pub struct Ips {
    inner: Mutex<IpsInner>,
    /// Every sampled packet, for `mssp monitor` streams.
    pub monitor: tokio::sync::broadcast::Sender<Arc<Observed>>,
    pub sample_every: AtomicU64,
    pub samples_total: AtomicU64,
    /// Seconds from an attack's onset to its detection.
    pub detection_latency: Histogram,
    /// Whether the data path's meters and samples are read (a kernel agent).
    pub running: std::sync::atomic::AtomicBool,
    /// With a fleet: this edge's name and where its attack reports go upstream.
    pub reports: Mutex<Option<(String, tokio::sync::mpsc::Sender<mssp_wire::fleet::Report>)>>,
}

pub struct IpsInner {
    pub engine: Engine,
    pub store: AttackStore,
    /// The last seconds of samples, for `mssp top`.
    pub recent: VecDeque<Arc<Observed>>,
    /// Per destination of customers with detection on: rates over the last second, and the
    /// attack on it.
    pub targets: Vec<(mssp_detect::engine::Target, Rates)>,
    pub last_error: Option<String>,
}

/// Seconds of samples kept for `mssp top`.
pub const TOP_WINDOW_SECS: f64 = 5.0;

impl Ips {
    pub fn new(
        state_dir: &std::path::Path,
        cfg: EngineConfig,
    ) -> Result<Ips, crate::store::StateError> {
        let store = AttackStore::new(state_dir);
        let attacks = store.load()?;
        let mut engine = Engine::new(cfg);
        engine.resume(
            attacks,
            &Now {
                mono: mono(),
                wall: time::OffsetDateTime::now_utc(),
            },
        );
        let (monitor, _) = tokio::sync::broadcast::channel(8192);
        Ok(Ips {
            inner: Mutex::new(IpsInner {
                engine,
                store,
                recent: VecDeque::new(),
                targets: Vec::new(),
                last_error: None,
            }),
            monitor,
            sample_every: AtomicU64::new(mssp_common::abi::DEFAULT_SAMPLE_EVERY),
            samples_total: AtomicU64::new(0),
            reports: Mutex::new(None),
            detection_latency: Histogram::new([0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0]),
            running: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, IpsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sample_every(&self) -> u64 {
        self.sample_every.load(Ordering::Relaxed)
    }
}

/// Monotonic seconds since the first call.
pub fn mono() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// The detector's metric families, read under its own lock.
pub fn metrics(ips: &Ips) -> crate::metrics::DetectionMetrics {
    use crate::metrics::{CustomerLabels, DetectionMetrics, KindLabels};
    let inner = ips.lock();
    let mut per: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for a in inner.engine.attacks() {
        if a.state == mssp_wire::attacks::AttackState::Active {
            *per.entry(a.customer).or_default() += 1;
        }
    }
    let items = inner.engine.auto_items();
    let rules = items
        .iter()
        .filter(|i| matches!(i.kind, mssp_detect::engine::AutoKind::Rule { .. }))
        .count() as u64;
    let s = &inner.engine.stats;
    DetectionMetrics {
        attacks_active: per
            .into_iter()
            .map(|(c, n)| {
                (
                    CustomerLabels {
                        customer: c.to_string(),
                    },
                    n,
                )
            })
            .collect(),
        attacks_total: s.attacks_started,
        auto_installed_total: s.auto_installed,
        auto_removed_total: s.auto_removed,
        auto_items: vec![
            (KindLabels { kind: "rule" }, rules),
            (KindLabels { kind: "source" }, items.len() as u64 - rules),
        ],
        samples_total: ips.samples_total.load(Ordering::Relaxed),
        sample_every: if ips.running.load(Ordering::Relaxed) {
            ips.sample_every()
        } else {
            0
        },
        detection_latency: Some(ips.detection_latency.clone()),
    }
}
