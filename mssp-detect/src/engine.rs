//! Attacks per destination: started when a threshold is exceeded in enough consecutive
//! one-second windows, mitigated from their samples, extended while they last, ended when
//! traffic stays under half of every threshold for the hold time. The engine is the one
//! source of the auto layer: [`Engine::auto_items`] is what the agent publishes.

use std::collections::{HashMap, HashSet, VecDeque};

use mssp_common::abi::{Meter, MeterKey};
use mssp_core::policy::{
    cidr::format_addr,
    detection::{DetectMode, Detection, Metric},
    rules::AUTO_RULE_IDS,
};
use mssp_wire::attacks::{Attack, AttackState, FingerprintView, MitigationItem};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::{
    observed::Observed,
    plan::{Planned, Room, plan, top_sources},
    rates::History,
    reservoir::Reservoir,
};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Earlier samples kept per customer (the collateral estimate's baseline).
    pub baseline: usize,
    /// Samples kept per attack.
    pub attack_samples: usize,
    /// Samples are held this long before they join the baseline, so that the start of an
    /// attack (before it is detected) never counts as the customer's normal traffic.
    pub recent_secs: f64,
    /// Samples wanted before a fingerprint is chosen ...
    pub min_samples: usize,
    /// ... or this long after detection, whichever comes first.
    pub plan_wait_secs: f64,
    /// Auto rules and source entries in force at once, over all customers.
    pub max_auto_rules: usize,
    pub max_auto_sources: usize,
    /// Ended attacks kept.
    pub history: usize,
    /// This edge's fleet name, stamped on attacks.
    pub edge: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            baseline: 1024,
            attack_samples: 4096,
            recent_secs: 3.0,
            min_samples: 40,
            plan_wait_secs: 2.0,
            max_auto_rules: 256,
            max_auto_sources: 4096,
            history: 1000,
            edge: None,
        }
    }
}

/// What the engine asks of the policy.
pub trait Settings {
    /// The customer's detection settings in force (`None` or mode off: not watched).
    fn detection(&self, customer: u32) -> Option<Detection>;
    fn name(&self, customer: u32) -> Option<String>;
}

/// Sources never blocked: infrastructure, and allowlisted for the customer or globally.
pub trait Protected {
    fn protected(&self, customer: u32, v6: bool, addr: u128) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub customer: u32,
    pub v6: bool,
    pub addr: u128,
}

impl Target {
    pub fn from_key(k: &MeterKey) -> Target {
        match k.v4() {
            Some(a) => Target {
                customer: k.customer,
                v6: false,
                addr: a as u128,
            },
            None => Target {
                customer: k.customer,
                v6: true,
                addr: k.addr.iter().fold(0u128, |a, w| (a << 32) | *w as u128),
            },
        }
    }
}

/// The clock, read once per tick.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: f64,
    pub wall: OffsetDateTime,
}

impl Now {
    fn wall_at(&self, mono: f64) -> OffsetDateTime {
        self.wall - Duration::seconds_f64((self.mono - mono).max(0.0))
    }
}

/// One item of the auto layer.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoItem {
    pub customer: u32,
    pub attack: String,
    pub kind: AutoKind,
    /// When it was planned.
    pub since: OffsetDateTime,
    pub expires: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AutoKind {
    /// A rule in the policy syntax (with its id in the auto range).
    Rule { id: u32, rule: Value },
    /// A source entry that drops (`prefix` a host route).
    Source { prefix: String },
}

#[derive(Clone, Debug)]
pub enum Event {
    Start(Attack),
    Mitigated(Attack),
    Peak(Attack),
    End(Attack),
}

#[derive(Default)]
struct TargetState {
    history: History,
    last: Meter,
    seen: f64,
}

struct Active {
    attack: Attack,
    target: Target,
    detection: Detection,
    triggered: Vec<(Metric, u64)>,
    samples: Vec<Observed>,
    seen: u64,
    recent: VecDeque<Observed>,
    below_since: Option<f64>,
    detected: f64,
    planned: Option<f64>,
    replans: u32,
    items: Vec<AutoItem>,
    peak_logged: (f64, f64),
}

/// Counters for metrics.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub samples: u64,
    pub attacks_started: u64,
    pub auto_installed: u64,
    pub auto_removed: u64,
    /// Seconds from onset to detection of each attack started since the last take.
    pub detection_latencies: Vec<f64>,
}

pub struct Engine {
    cfg: EngineConfig,
    targets: HashMap<Target, TargetState>,
    recent: HashMap<u32, VecDeque<Observed>>,
    baselines: HashMap<u32, Reservoir<Observed>>,
    active: Vec<Active>,
    ended: VecDeque<Attack>,
    watched: HashSet<u32>,
    next_rule: u32,
    auto_version: u64,
    /// When the last plan was made (what [`Engine::refuse`] takes back).
    last_plan_mono: f64,
    rng: SmallRng,
    /// The previous tick's time.
    last_tick: Option<f64>,
    pub stats: EngineStats,
}

const RECENT_CAP: usize = 4096;

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            targets: HashMap::new(),
            recent: HashMap::new(),
            baselines: HashMap::new(),
            active: Vec::new(),
            ended: VecDeque::new(),
            watched: HashSet::new(),
            next_rule: AUTO_RULE_IDS,
            auto_version: 0,
            last_plan_mono: f64::MAX,
            rng: SmallRng::from_os_rng(),
            stats: EngineStats::default(),
            last_tick: None,
        }
    }

    /// Takes up the attacks a previous agent recorded: the active ones go on (their
    /// mitigations stay in force) until traffic stays under half the thresholds for the
    /// hold time, as if no restart had happened.
    pub fn resume(&mut self, attacks: Vec<Attack>, now: &Now) {
        for a in attacks {
            let id_max = a
                .mitigation
                .iter()
                .filter_map(|m| m.rule.as_ref()?.get("id")?.as_u64())
                .max();
            if let Some(m) = id_max {
                self.next_rule = self.next_rule.max(m as u32 + 1);
            }
            if a.state == AttackState::Ended {
                self.ended.push_back(a);
                continue;
            }
            let Some(target) = parse_target(&a) else {
                continue;
            };
            let items: Vec<AutoItem> = a
                .mitigation
                .iter()
                .filter(|m| m.installed)
                .filter_map(|m| item_of(&a, m))
                .collect();
            self.active.push(Active {
                target,
                detection: Detection::OFF,
                triggered: Vec::new(),
                samples: Vec::new(),
                seen: 0,
                recent: VecDeque::new(),
                below_since: None,
                detected: now.mono,
                planned: Some(now.mono),
                replans: 0,
                items,
                peak_logged: (now.mono, a.peak_pps),
                attack: a,
            });
        }
        while self.ended.len() > self.cfg.history {
            self.ended.pop_front();
        }
        self.auto_version += 1;
    }

    /// A sampled packet: to its attack if its destination is under one, else held as the
    /// customer's recent traffic (and later its baseline).
    pub fn on_sample(&mut self, o: Observed) {
        self.stats.samples += 1;
        if o.customer == 0 || !o.parsed || !self.watched.contains(&o.customer) {
            return;
        }
        let t = Target {
            customer: o.customer,
            v6: o.v6,
            addr: o.dst,
        };
        if let Some(a) = self.active.iter_mut().find(|a| a.target == t) {
            a.recent.push_back(o.clone());
            while a.recent.front().is_some_and(|r| r.mono < o.mono - 2.0)
                || a.recent.len() > RECENT_CAP
            {
                a.recent.pop_front();
            }
            push_bounded(
                &mut a.samples,
                &mut a.seen,
                o,
                self.cfg.attack_samples,
                &mut self.rng,
            );
            return;
        }
        let ring = self.recent.entry(o.customer).or_default();
        ring.push_back(o);
        // Only samples that aged past `recent_secs` with no attack on their destination join
        // the baseline; a burst that overflows the ring is dropped, never taken as normal.
        while ring.len() > RECENT_CAP {
            ring.pop_front();
        }
        let horizon = ring.back().map_or(0.0, |l| l.mono) - self.cfg.recent_secs;
        while ring.front().is_some_and(|f| f.mono < horizon) {
            let old = ring.pop_front().expect("front exists");
            let under_attack = self.active.iter().any(|a| {
                a.target.customer == old.customer
                    && a.target.addr == old.dst
                    && a.target.v6 == old.v6
            });
            if !under_attack {
                let cap = self.cfg.baseline;
                self.baselines
                    .entry(old.customer)
                    .or_insert_with(|| Reservoir::new(cap))
                    .push(old, &mut self.rng);
            }
        }
    }

    /// One tick: the meters as read now. Returns what happened to attacks.
    pub fn tick(
        &mut self,
        now: &Now,
        meters: &[(MeterKey, Meter)],
        settings: &dyn Settings,
        protected: &dyn Protected,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut seen_now: HashSet<Target> = HashSet::new();
        let mut detections: HashMap<u32, Option<Detection>> = HashMap::new();
        let mut detection_of = |c: u32| -> Option<Detection> {
            detections
                .entry(c)
                .or_insert_with(|| settings.detection(c).filter(|d| d.mode != DetectMode::Off))
                .clone()
        };
        self.watched.clear();
        for (k, m) in meters {
            let t = Target::from_key(k);
            let Some(d) = detection_of(t.customer) else {
                continue;
            };
            self.watched.insert(t.customer);
            let keep = d.windows as f64 + 2.0;
            let st = self.targets.entry(t).or_insert_with(|| {
                // A destination new since the last tick had no meter before: no traffic
                // (a meter exists from its first packet), so its windows start from zero
                // instead of waiting for seconds of its own history. Not on the first
                // tick: the meters may hold counts from before this engine started.
                let mut st = TargetState::default();
                if let Some(prev) = self.last_tick {
                    // Zeros a quarter second apart, as ticks would have read them: a
                    // window spans readings, so one old zero would spread the first
                    // reading's packets over seconds.
                    let steps = (keep / 0.25).ceil() as usize;
                    for k in (0..=steps).rev() {
                        st.history
                            .push(prev - k as f64 * 0.25, Meter::default(), keep);
                    }
                }
                st
            });
            st.history.push(now.mono, *m, keep);
            st.last = *m;
            st.seen = now.mono;
            seen_now.insert(t);
        }
        self.last_tick = Some(now.mono);
        // A destination whose meter is gone (no traffic, or evicted) reads as unchanged.
        for (t, st) in self.targets.iter_mut() {
            if !seen_now.contains(t) {
                let last = st.last;
                st.history.push(now.mono, last, 12.0);
            }
        }

        // Active attacks: peak, hold, extension, end.
        let mut i = 0;
        while i < self.active.len() {
            let t = self.active[i].target;
            let d = detection_of(t.customer);
            let ended = match d {
                None => Some("detection turned off for the customer".to_string()),
                Some(d) => {
                    let a = &mut self.active[i];
                    if a.detection.thresholds.is_empty() {
                        // Resumed after a restart: the settings come from the policy now.
                        a.triggered = d.thresholds.clone();
                    }
                    a.detection = d;
                    self.update_active(i, now, &mut events);
                    let a = &self.active[i];
                    a.below_since
                        .filter(|s| now.mono - s >= a.detection.hold_secs as f64)
                        .map(|_| {
                            format!(
                                "under half of every threshold for {} s",
                                a.detection.hold_secs
                            )
                        })
                }
            };
            if let Some(why) = ended {
                let a = self.active.remove(i);
                events.push(Event::End(self.finish(a, now, &why)));
                continue;
            }
            i += 1;
        }

        // New attacks.
        let mut started = Vec::new();
        for (t, st) in &self.targets {
            if self.active.iter().any(|a| a.target == *t) {
                continue;
            }
            let Some(d) = detection_of(t.customer) else {
                continue;
            };
            let exceeded: Vec<(Metric, u64)> = d
                .thresholds
                .iter()
                .filter(|(m, thr)| {
                    (0..d.windows).all(|k| {
                        st.history
                            .window(k as f64)
                            .is_some_and(|r| r.value(*m) > *thr as f64)
                    })
                })
                .copied()
                .collect();
            if !exceeded.is_empty() {
                let onset = exceeded
                    .iter()
                    .filter_map(|(m, thr)| st.history.onset(*m, *thr as f64))
                    .fold(now.mono, f64::min);
                let peak = st.history.window(0.0).unwrap_or_default();
                started.push((*t, d, exceeded, onset, peak));
            }
        }
        for (t, d, exceeded, onset, peak) in started {
            let a = self.start(t, d, exceeded, onset, peak, now, settings);
            events.push(Event::Start(a.attack.clone()));
            self.active.push(a);
        }

        // Mitigations: planned once there are enough samples (or after a wait), re-planned
        // when what is installed stops matching the attack.
        for i in 0..self.active.len() {
            let a = &self.active[i];
            let due = match a.planned {
                None => {
                    a.samples.len() >= self.cfg.min_samples
                        || now.mono - a.detected >= self.cfg.plan_wait_secs
                }
                Some(at) => self.ineffective(a, now.mono, at),
            };
            if due {
                if let Some(e) = self.mitigate(i, now, protected) {
                    events.push(e);
                }
            }
        }

        self.targets.retain(|t, st| {
            now.mono - st.seen < 60.0 || self.active.iter().any(|a| a.target == *t)
        });
        let watched = &self.watched;
        self.recent.retain(|c, _| watched.contains(c));
        self.baselines.retain(|c, _| watched.contains(c));
        events
    }

    fn start(
        &mut self,
        t: Target,
        d: Detection,
        triggered: Vec<(Metric, u64)>,
        onset: f64,
        peak: crate::rates::Rates,
        now: &Now,
        settings: &dyn Settings,
    ) -> Active {
        let id = attack_id(now.wall, t.customer, self.rng.random());
        // The samples of the last seconds to this destination are the attack's first.
        let mut samples = Vec::new();
        let mut seen = 0;
        if let Some(ring) = self.recent.get_mut(&t.customer) {
            let (mine, rest): (VecDeque<Observed>, VecDeque<Observed>) = ring
                .drain(..)
                .partition(|o| o.v6 == t.v6 && o.dst == t.addr);
            *ring = rest;
            for o in mine {
                push_bounded(
                    &mut samples,
                    &mut seen,
                    o,
                    self.cfg.attack_samples,
                    &mut self.rng,
                );
            }
        }
        let started_at = now.wall_at(onset);
        self.stats.attacks_started += 1;
        self.stats
            .detection_latencies
            .push((now.wall - started_at).as_seconds_f64());
        let attack = Attack {
            id,
            customer: t.customer,
            customer_name: settings.name(t.customer),
            target: format_addr(t.v6, t.addr),
            state: AttackState::Active,
            mode: d.mode.name().into(),
            metrics: triggered
                .iter()
                .map(|(m, _)| m.name().to_string())
                .collect(),
            started_at,
            detected_at: now.wall,
            mitigated_at: None,
            ended_at: None,
            peak_pps: peak.pps[0],
            peak_bps: peak.bps[0],
            dropped_packets: 0,
            mitigation: Vec::new(),
            fingerprint: None,
            top_sources: Vec::new(),
            edge: self.cfg.edge.clone(),
        };
        Active {
            attack,
            target: t,
            detection: d,
            triggered,
            samples,
            seen,
            recent: VecDeque::new(),
            below_since: None,
            detected: now.mono,
            planned: None,
            replans: 0,
            items: Vec::new(),
            peak_logged: (now.mono, peak.pps[0]),
        }
    }

    fn update_active(&mut self, i: usize, now: &Now, events: &mut Vec<Event>) {
        let a = &mut self.active[i];
        let Some(st) = self.targets.get(&a.target) else {
            return;
        };
        let w = st.history.window(0.0).unwrap_or_default();
        a.attack.peak_pps = a.attack.peak_pps.max(w.pps[0]);
        a.attack.peak_bps = a.attack.peak_bps.max(w.bps[0]);
        if a.attack.peak_pps > 1.25 * a.peak_logged.1 && now.mono - a.peak_logged.0 >= 5.0 {
            a.peak_logged = (now.mono, a.attack.peak_pps);
            events.push(Event::Peak(a.attack.clone()));
        }
        let below = a
            .detection
            .thresholds
            .iter()
            .all(|(m, thr)| w.value(*m) < *thr as f64 / 2.0);
        if below {
            a.below_since.get_or_insert(now.mono);
        } else {
            a.below_since = None;
        }
        // Extended while it lasts: at half the TTL left, another full TTL.
        let ttl = Duration::seconds(a.detection.ttl_secs as i64);
        if !a.items.is_empty() && a.items.iter().any(|it| it.expires - now.wall < ttl / 2) {
            let expires = now.wall + ttl;
            for it in &mut a.items {
                it.expires = expires;
            }
            for m in &mut a.attack.mitigation {
                m.expires = expires;
            }
            self.auto_version += 1;
        }
    }

    /// What is installed leaves more than the threshold of the attack's traffic through
    /// while the attack goes on (it changed, or the fingerprint missed): plan again, three
    /// times at most.
    fn ineffective(&self, a: &Active, now: f64, planned_at: f64) -> bool {
        if a.items.is_empty()
            || a.replans >= 3
            || now - planned_at < 3.0
            || a.recent.len() < 50
            || a.below_since.is_some()
        {
            return false;
        }
        let passed = a
            .recent
            .iter()
            .filter(|o| o.verdict == mssp_common::Verdict::Pass)
            .count() as f64
            / a.recent.len() as f64;
        let rate = self
            .targets
            .get(&a.target)
            .and_then(|st| st.history.window(0.0))
            .unwrap_or_default();
        match a
            .detection
            .thresholds
            .iter()
            .filter(|(m, _)| !m.is_bits())
            .map(|(_, v)| *v)
            .min()
        {
            Some(thr) => passed * rate.pps[0] > 1.5 * thr as f64,
            None => passed > 0.5,
        }
    }

    fn room(&self, customer: u32, d: &Detection, skip: usize) -> Room {
        let (mut rules, mut sources, mut rules_c, mut sources_c) = (0, 0, 0, 0);
        for (j, a) in self.active.iter().enumerate() {
            if j == skip || a.attack.mode != "mitigate" {
                continue;
            }
            for it in &a.items {
                let mine = it.customer == customer;
                match it.kind {
                    AutoKind::Rule { .. } => {
                        rules += 1;
                        rules_c += mine as usize;
                    }
                    AutoKind::Source { .. } => {
                        sources += 1;
                        sources_c += mine as usize;
                    }
                }
            }
        }
        Room {
            rules: (d.max_rules as usize)
                .saturating_sub(rules_c)
                .min(self.cfg.max_auto_rules.saturating_sub(rules)),
            sources: (d.max_sources as usize)
                .saturating_sub(sources_c)
                .min(self.cfg.max_auto_sources.saturating_sub(sources)),
        }
    }

    fn mitigate(&mut self, i: usize, now: &Now, protected: &dyn Protected) -> Option<Event> {
        let room = self.room(self.active[i].target.customer, &self.active[i].detection, i);
        let baseline: Vec<Observed> = self
            .baselines
            .get(&self.active[i].target.customer)
            .map(|r| {
                let t = self.active[i].target;
                r.items()
                    .iter()
                    .filter(|o| o.v6 == t.v6 && o.dst == t.addr)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let a = &mut self.active[i];
        let replan = a.planned.is_some();
        if replan {
            // The samples that count now are the recent ones.
            a.samples = a.recent.iter().cloned().collect();
            a.replans += 1;
        }
        let t = a.target;
        let attack: Vec<&Observed> = a.samples.iter().collect();
        let base: Vec<&Observed> = baseline.iter().collect();
        let is_protected = |v6: bool, addr: u128| protected.protected(t.customer, v6, addr);
        let p = plan(
            t.v6,
            t.addr,
            &attack,
            &base,
            &a.triggered,
            &a.detection,
            &is_protected,
            room,
        );
        let secs = match (attack.first(), attack.last()) {
            (Some(f), Some(l)) => (l.mono - f.mono).max(0.25),
            _ => 1.0,
        };
        a.attack.top_sources = top_sources(&attack, secs, 10);
        let expires = now.wall + Duration::seconds(a.detection.ttl_secs as i64);
        let install = a.attack.mode == "mitigate";
        let old = std::mem::take(&mut a.items);
        let mut items = Vec::new();
        let mut mitigation = Vec::new();
        for planned in &p.items {
            let (kind, mi) = match planned {
                Planned::Source { v6, addr } => {
                    let bits = if *v6 { 128 } else { 32 };
                    let prefix = format!("{}/{bits}", format_addr(*v6, *addr));
                    (
                        AutoKind::Source {
                            prefix: prefix.clone(),
                        },
                        MitigationItem {
                            kind: "source".into(),
                            rule: None,
                            prefix: Some(prefix),
                            action: Some("drop".into()),
                            expires,
                            installed: install,
                        },
                    )
                }
                Planned::Rule { matches, action } => {
                    let id = self.next_rule;
                    self.next_rule = self.next_rule.wrapping_add(1).max(AUTO_RULE_IDS);
                    let rule = json!({"id": id, "match": matches, "action": action,
                                      "comment": format!("auto: attack {}", a.attack.id)});
                    (
                        AutoKind::Rule {
                            id,
                            rule: rule.clone(),
                        },
                        MitigationItem {
                            kind: "rule".into(),
                            rule: Some(rule),
                            prefix: None,
                            action: None,
                            expires,
                            installed: install,
                        },
                    )
                }
            };
            items.push(AutoItem {
                customer: t.customer,
                attack: a.attack.id.clone(),
                kind,
                since: now.wall,
                expires,
            });
            mitigation.push(mi);
        }
        for m in &mut a.attack.mitigation {
            m.installed = false;
        }
        a.attack.mitigation.extend(mitigation);
        a.attack.fingerprint = Some(FingerprintView {
            matches: p.fingerprint.match_doc(),
            coverage: p.fit.coverage,
            collateral: p.fit.collateral,
            attack_samples: p.fit.attack_samples as u64,
            baseline_samples: p.fit.baseline_samples as u64,
            decision: if replan {
                format!(
                    "re-planned (what was installed dropped under half of it): {}",
                    p.decision
                )
            } else {
                p.decision.clone()
            },
        });
        a.planned = Some(now.mono);
        self.last_plan_mono = now.mono;
        if install {
            self.stats.auto_installed += items.len() as u64;
            self.stats.auto_removed += old.len() as u64;
            if !items.is_empty() {
                a.attack.mitigated_at.get_or_insert(now.wall);
            }
            a.items = items;
            self.auto_version += 1;
        }
        Some(Event::Mitigated(a.attack.clone()))
    }

    fn finish(&mut self, mut a: Active, now: &Now, why: &str) -> Attack {
        a.attack.state = AttackState::Ended;
        a.attack.ended_at = Some(now.wall);
        for m in &mut a.attack.mitigation {
            m.installed = false;
        }
        if !a.items.is_empty() {
            self.stats.auto_removed += a.items.len() as u64;
            self.auto_version += 1;
        }
        if let Some(fp) = &mut a.attack.fingerprint {
            fp.decision = format!("{}; ended: {why}", fp.decision);
        }
        self.ended.push_back(a.attack.clone());
        while self.ended.len() > self.cfg.history {
            self.ended.pop_front();
        }
        a.attack
    }

    /// The auto layer as it should be in force now (mitigate mode, not expired).
    pub fn auto_items(&self) -> Vec<AutoItem> {
        self.active
            .iter()
            .filter(|a| a.attack.mode == "mitigate")
            .flat_map(|a| a.items.iter().cloned())
            .collect()
    }

    /// Bumped whenever [`Engine::auto_items`] changes.
    pub fn auto_version(&self) -> u64 {
        self.auto_version
    }

    /// Active attacks, then ended ones, newest first.
    pub fn attacks(&self) -> Vec<Attack> {
        let mut v: Vec<Attack> = self.active.iter().map(|a| a.attack.clone()).collect();
        v.extend(self.ended.iter().rev().cloned());
        v
    }

    /// Rates over the last second per watched destination, with the attack on it.
    pub fn target_rates(&self) -> Vec<(Target, crate::rates::Rates, Option<String>)> {
        self.targets
            .iter()
            .filter_map(|(t, st)| {
                let r = st.history.window(0.0)?;
                let attack = self
                    .active
                    .iter()
                    .find(|a| a.target == *t)
                    .map(|a| a.attack.id.clone());
                Some((*t, r, attack))
            })
            .collect()
    }

    /// The auto items an attack has in force (mitigate mode).
    pub fn items_of(&self, id: &str) -> Vec<AutoItem> {
        self.active
            .iter()
            .filter(|a| a.attack.id == id && a.attack.mode == "mitigate")
            .flat_map(|a| a.items.iter().cloned())
            .collect()
    }

    /// The data path refused what was planned (the publisher's error): the attack keeps its
    /// record, says why, and nothing of it stays in the auto layer.
    pub fn refuse(&mut self, why: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for a in &mut self.active {
            if a.items.is_empty() {
                continue;
            }
            // Only the newest plan can be at fault; older ones were published before.
            if a.planned.is_some_and(|p| p >= self.last_plan_mono) {
                a.items.clear();
                for m in &mut a.attack.mitigation {
                    m.installed = false;
                }
                if let Some(fp) = &mut a.attack.fingerprint {
                    fp.decision = format!("{}; not installed: {why}", fp.decision);
                }
                ids.push(a.attack.id.clone());
            }
        }
        if !ids.is_empty() {
            self.auto_version += 1;
        }
        ids
    }

    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// The packets an active attack's mitigations dropped so far (the agent reads them from
    /// the counters).
    pub fn set_dropped(&mut self, id: &str, packets: u64) {
        if let Some(a) = self.active.iter_mut().find(|a| a.attack.id == id) {
            a.attack.dropped_packets = a.attack.dropped_packets.max(packets);
        }
    }
}

fn push_bounded(
    v: &mut Vec<Observed>,
    seen: &mut u64,
    o: Observed,
    cap: usize,
    rng: &mut SmallRng,
) {
    *seen += 1;
    if v.len() < cap {
        v.push(o);
    } else {
        let j = rng.random_range(0..*seen);
        if (j as usize) < cap {
            // Keep time order for the stability test: replace and let the order drift
            // slightly; the halves stay mostly early and late.
            v[j as usize] = o;
        }
    }
}

fn attack_id(at: OffsetDateTime, customer: u32, r: u16) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{customer}-{r:04x}",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn parse_target(a: &Attack) -> Option<Target> {
    let ip: std::net::IpAddr = a.target.parse().ok()?;
    Some(match ip {
        std::net::IpAddr::V4(v) => Target {
            customer: a.customer,
            v6: false,
            addr: u32::from(v) as u128,
        },
        std::net::IpAddr::V6(v) => Target {
            customer: a.customer,
            v6: true,
            addr: u128::from(v),
        },
    })
}

fn item_of(a: &Attack, m: &MitigationItem) -> Option<AutoItem> {
    let kind = match m.kind.as_str() {
        "rule" => {
            let rule = m.rule.clone()?;
            AutoKind::Rule {
                id: rule.get("id")?.as_u64()? as u32,
                rule,
            }
        }
        "source" => AutoKind::Source {
            prefix: m.prefix.clone()?,
        },
        _ => return None,
    };
    Some(AutoItem {
        customer: a.customer,
        attack: a.id.clone(),
        kind,
        since: a.mitigated_at.unwrap_or(a.detected_at),
        expires: m.expires,
    })
}
