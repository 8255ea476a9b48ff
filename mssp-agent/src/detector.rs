//! The detector at work on a kernel agent: one thread reads the sample ring buffer, one
//! ticks every quarter second (meters read, the engine's decisions published as the auto
//! layer, the attack history persisted, the sampling rate adapted to the load).

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::{error, info, warn};
use mssp_common::{Layer, Scope};
use mssp_core::{
    dataplane::{EntryKey, StatKey, StatKind, backend::MapBackend},
    observe::{Meters, SampleRing},
    policy::cidr::parse_cidr,
};
use mssp_detect::{
    Event, Observed,
    engine::{AutoKind, Now},
};
use mssp_wire::attacks::{Attack, AttackEvent};
use serde_json::json;
use time::OffsetDateTime;

use crate::{
    Agent,
    ips::{Ips, TOP_WINDOW_SECS, mono},
};

pub const TICK: Duration = Duration::from_millis(250);

/// Running detector threads; stopped (and joined) on drop.
pub struct Runtime {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn start<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    meters: Meters,
    ring: SampleRing,
) -> Runtime {
    let stop = Arc::new(AtomicBool::new(false));
    let queue: Arc<Mutex<Vec<Observed>>> = Arc::new(Mutex::new(Vec::new()));
    agent.ips.running.store(true, Ordering::Relaxed);
    let sampler = {
        let (stop, queue, agent) = (stop.clone(), queue.clone(), agent.clone());
        std::thread::Builder::new()
            .name("mssp-samples".into())
            .spawn(move || sampler(ring, &agent.ips, &queue, &stop))
            .expect("spawn the sampler thread")
    };
    let ticker = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("mssp-detect".into())
            .spawn(move || ticker(agent, meters, &queue, &stop))
            .expect("spawn the detector thread")
    };
    Runtime {
        stop,
        threads: vec![sampler, ticker],
    }
}

/// Most samples queued between ticks; past it the oldest are dropped (counted as seen).
const QUEUE_CAP: usize = 65_536;

fn sampler(mut ring: SampleRing, ips: &Ips, queue: &Mutex<Vec<Observed>>, stop: &AtomicBool) {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        let now = mono();
        let mut batch = Vec::new();
        ring.drain(|s| batch.push(Observed::from_sample(s, now)));
        if batch.is_empty() {
            continue;
        }
        ips.samples_total
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if ips.monitor.receiver_count() > 0 {
            for o in &batch {
                let _ = ips.monitor.send(Arc::new(o.clone()));
            }
        }
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(batch);
        if q.len() > QUEUE_CAP {
            let excess = q.len() - QUEUE_CAP;
            q.drain(..excess);
        }
    }
}

/// Samples wanted per second (the rate adapts to keep near it).
const SAMPLES_PER_SECOND: f64 = 4096.0;

fn ticker<B: MapBackend + Send + 'static>(
    agent: Arc<Agent<B>>,
    mut meters: Meters,
    queue: &Mutex<Vec<Observed>>,
    stop: &AtomicBool,
) {
    // The first tick at once: what the meters hold at start is their baseline, so a flood
    // that begins right after start is measured from zero (not from an unknown history).
    let mut next = Instant::now()
        .checked_sub(TICK)
        .unwrap_or_else(Instant::now);
    let mut last_rate = (Instant::now(), 0u64);
    let mut last_dropped = Instant::now();
    let mut published = u64::MAX;
    match meters.set_sample_every(agent.ips.sample_every()) {
        Ok(n) => agent.ips.sample_every.store(n, Ordering::Relaxed),
        Err(e) => warn!("setting the sampling rate: {e}"),
    }
    while !stop.load(Ordering::Relaxed) {
        next += TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
        let samples = std::mem::take(&mut *queue.lock().unwrap_or_else(|p| p.into_inner()));
        // The reading's time is taken with it, before any lock: a reading stamped after a
        // wait makes rates dip and spike (and put an attack's start late).
        let readings = meters.read();
        let now = Now {
            mono: mono(),
            wall: OffsetDateTime::now_utc(),
        };
        let (settings, protected) = {
            let st = agent.lock();
            (st.detection.clone(), st.protected.clone())
        };
        let (auto, events) = {
            let mut ips = agent.ips.lock();
            for o in samples {
                let o = Arc::new(o);
                ips.recent.push_back(o.clone());
                ips.engine.on_sample(Arc::unwrap_or_clone(o));
            }
            while ips
                .recent
                .front()
                .is_some_and(|o| o.mono < now.mono - TOP_WINDOW_SECS)
            {
                ips.recent.pop_front();
            }
            let events = ips.engine.tick(&now, &readings, &*settings, &*protected);
            for l in ips.engine.stats.detection_latencies.drain(..) {
                agent.ips.detection_latency.observe(l);
            }
            let version = ips.engine.auto_version();
            let auto = (version != published).then(|| {
                published = version;
                ips.engine.auto_items()
            });
            (auto, events)
        };
        if let Some(items) = auto {
            let r = agent.lock().set_auto(items);
            agent.expiry_changed.notify_one();
            if let Err(e) = r {
                error!("publishing the auto layer: {e}");
                let mut ips = agent.ips.lock();
                let refused = ips.engine.refuse(&e.to_string());
                ips.last_error = Some(format!("auto layer: {e}"));
                for id in refused {
                    error!("attack {id}: mitigation not installed: {e}");
                }
            }
        }
        if !events.is_empty() {
            record(&agent, &events);
        }
        if last_dropped.elapsed() >= Duration::from_secs(1) {
            last_dropped = Instant::now();
            dropped(&agent);
        }
        // Sampling: keep near SAMPLES_PER_SECOND whatever the load, each tick (a flood
        // must not have the agent decode every packet for long).
        let total = agent.ips.samples_total.load(Ordering::Relaxed);
        let dt = last_rate.0.elapsed().as_secs_f64();
        if dt >= 0.2 {
            let got = (total - last_rate.1) as f64 / dt;
            let every = agent.ips.sample_every() as f64;
            let want = ((got * every) / SAMPLES_PER_SECOND).max(1.0) as u64;
            let want = want.next_power_of_two().min(1 << 16);
            // Down slowly (a second of lower rate), up at once.
            let current = agent.ips.sample_every();
            let change = want > current || (want < current && dt >= 1.0);
            if change && want != current {
                match meters.set_sample_every(want) {
                    Ok(n) => agent.ips.sample_every.store(n, Ordering::Relaxed),
                    Err(e) => warn!("setting the sampling rate: {e}"),
                }
            }
            if change || dt >= 1.0 {
                last_rate = (Instant::now(), total);
            }
        }
    }
}

/// Events into the log and the history file, and the journal of the agent.
fn record<B: MapBackend + Send + 'static>(agent: &Agent<B>, events: &[Event]) {
    let mut lines = Vec::new();
    if let Some((edge, tx)) = &*agent.ips.reports.lock().unwrap_or_else(|p| p.into_inner()) {
        for e in events {
            let (event, a) = match e {
                Event::Start(a) => ("start", a),
                Event::Mitigated(a) => ("mitigated", a),
                Event::Peak(a) => ("peak", a),
                Event::End(a) => ("end", a),
            };
            // Full queue (broker gone for long): the newest reports wait, the log has all.
            let _ = tx.try_send(mssp_wire::fleet::Report {
                edge: edge.clone(),
                event: event.into(),
                attack: a.clone(),
            });
        }
    }
    for e in events {
        let (name, a, detail): (&str, &Attack, Option<serde_json::Value>) = match e {
            Event::Start(a) => {
                info!(
                    "attack {} on {} (customer {}): {} over threshold, detected {:.1} s after onset",
                    a.id,
                    a.target,
                    a.customer,
                    a.metrics.join(", "),
                    (a.detected_at - a.started_at).as_seconds_f64()
                );
                (
                    "start",
                    a,
                    Some(json!({"metrics": a.metrics, "mode": a.mode})),
                )
            }
            Event::Mitigated(a) => {
                let fp = a.fingerprint.as_ref();
                info!(
                    "attack {}: {} ({} items{})",
                    a.id,
                    fp.map_or("", |f| f.decision.as_str()),
                    a.mitigation.iter().filter(|m| m.installed).count(),
                    if a.mode == "monitor" {
                        ", monitor mode: not installed"
                    } else {
                        ""
                    }
                );
                (
                    "mitigated",
                    a,
                    Some(json!({"mitigation": a.mitigation, "fingerprint": a.fingerprint})),
                )
            }
            Event::Peak(a) => ("peak", a, None),
            Event::End(a) => {
                info!(
                    "attack {} on {} ended ({} packets dropped)",
                    a.id, a.target, a.dropped_packets
                );
                (
                    "end",
                    a,
                    Some(
                        json!({"dropped_packets": a.dropped_packets, "ended_at": a.ended_at.map(|t| t.to_string())}),
                    ),
                )
            }
        };
        lines.push(AttackEvent {
            at: OffsetDateTime::now_utc(),
            event: name.into(),
            attack: a.id.clone(),
            customer: a.customer,
            target: a.target.clone(),
            pps: a.peak_pps,
            bps: a.peak_bps,
            detail,
        });
    }
    let ips = agent.ips.lock();
    if let Err(e) = ips.store.append(&lines) {
        error!("{e}");
    }
    if let Err(e) = ips.store.save(&ips.engine.attacks()) {
        error!("{e}");
    }
}

/// The packets each active attack's mitigations dropped, from the data path's counters.
fn dropped<B: MapBackend + Send + 'static>(agent: &Agent<B>) {
    let items = agent.ips.lock().engine.auto_items();
    if items.is_empty() {
        return;
    }
    let mut per_attack: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    {
        let st = agent.lock();
        for it in &items {
            let n = match &it.kind {
                AutoKind::Rule { id, rule } => st
                    .dp
                    .stat_id(&StatKey {
                        customer: it.customer,
                        kind: StatKind::Rule {
                            layer: Layer::Auto,
                            id: *id,
                        },
                    })
                    .and_then(|s| st.dp.backend().read_rule_stats(s, 1).ok())
                    // A drop rule drops what it matches; a rate limit what is over the limit.
                    .map_or(0, |c| {
                        if rule["action"] == "drop" {
                            c[0].packets
                        } else {
                            c[0].limited_packets
                        }
                    }),
                AutoKind::Source { prefix } => parse_cidr(prefix, true)
                    .ok()
                    .and_then(|net| {
                        st.dp.entry_id(&EntryKey {
                            scope: Scope::Customer(it.customer),
                            layer: Layer::Auto,
                            net,
                        })
                    })
                    .and_then(|id| st.dp.backend().read_entry_hits(id).ok())
                    .map_or(0, |c| c.packets),
            };
            *per_attack.entry(it.attack.clone()).or_default() += n;
        }
    }
    let mut ips = agent.ips.lock();
    for (id, n) in per_attack {
        ips.engine.set_dropped(&id, n);
    }
}
