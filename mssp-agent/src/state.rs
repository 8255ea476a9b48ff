//! Everything behind the agent's lock: the policy layers, the publisher over the maps, the
//! state directory, and what was last applied. One writer at a time (pushes, CLI edits and
//! expiry are serialised), readers briefly.
//!
//! Every change follows one rule: publish, then persist, and if persisting fails put the
//! previous layer back (in memory and in the maps), so what a reply says, what the data path
//! enforces and what a restart would load never differ.

use std::time::{Duration, Instant};

use log::{error, info, warn};
use mssp_core::{
    dataplane::{ApplyStats, Clock, Dataplane, DataplaneError, backend::MapBackend},
    pins::Attached,
    policy::Policy,
};
use time::OffsetDateTime;

use crate::{
    error::AgentError,
    host::Host,
    idlog::IdLog,
    layers::desired,
    store::{CentralMeta, LocalFile, StateError, Store, state_err},
};

/// The last successful apply.
#[derive(Clone, Debug)]
pub struct LastApply {
    pub at: OffsetDateTime,
    pub duration: Duration,
    pub stats: ApplyStats,
    pub trigger: String,
}

/// Where a central policy came from: the digest of its bytes and who sent it.
#[derive(Clone, Debug)]
pub struct Origin {
    pub digest: String,
    pub source: String,
}

pub struct AgentState<B: MapBackend> {
    pub dp: Dataplane<B>,
    pub host: Box<dyn Host>,
    pub central: Option<CentralMeta>,
    pub policy: Policy,
    pub local: LocalFile,
    pub(crate) idlog: IdLog,
    pub store: Store,
    pub attached: Vec<Attached>,
    /// Configured interfaces that do not exist (the agent runs degraded and retries).
    pub missing: Vec<String>,
    pub last_apply: Option<LastApply>,
    pub last_error: Option<String>,
    /// The auto layer: this edge's attack mitigations, as the detector wants them.
    pub auto: Vec<mssp_detect::engine::AutoItem>,
    /// The fleet layer: the controller's decisions in force here (state_dir/fleet.json).
    pub fleet: Vec<mssp_wire::fleet::Decision>,
    /// What the detector reads of the layers, rebuilt by every publish.
    pub detection: std::sync::Arc<crate::ips::settings::DetectionSnapshot>,
    pub protected: std::sync::Arc<crate::ips::settings::ProtectedSet>,
    /// The filtering table last written for the inspector (state_dir/filtering.json).
    pub filter_table: Option<mssp_filter::table::TableDoc>,
    /// `Desired::from_policy(&self.policy)`, kept between applies (its entry lists are
    /// shared, so a CLI edit clones it in time proportional to the customers); cleared by
    /// [`AgentState::replace_policy`], the only way the policy changes.
    pub(crate) central_desired: Option<mssp_core::dataplane::Desired>,
    /// Bumped by [`AgentState::replace_policy`]: what derived state is keyed on.
    pub(crate) policy_gen: u64,
    /// What the filtering table last written was made from (policy generation, local
    /// names): an apply with the same inputs skips rebuilding it (~6 ms at 10k customers).
    pub(crate) filter_inputs: Option<(u64, Vec<crate::store::LocalFilterName>)>,
    /// Set by the running agent (`lifecycle::run`), which reclaims after replying: an apply
    /// returns once the new policy is live and wakes this for the RCU barrier and the
    /// reclaiming (see `Dataplane::set_defer_reclaim`). `None`: applies reclaim themselves.
    pub(crate) reclaim_wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Every expiry of the central layer (entries and rules), sorted, for the policy
    /// generation it was built from: the expiry task asks after every edit, and building
    /// the desired state and scanning a million entries held the lock ~10 ms each time.
    pub(crate) central_expiries: Option<(u64, Vec<OffsetDateTime>)>,
}

/// Frees `garbage` (a replaced million-entry policy, a document's bytes) on a thread of its
/// own and then hands the freed memory back ([`release_freed_memory`]), so the reply that
/// made it garbage does not wait for either.
pub fn dispose<T: Send + 'static>(garbage: T) {
    let spawned = std::thread::Builder::new()
        .name("mssp-dispose".into())
        .spawn(move || {
            drop(garbage);
            release_freed_memory();
        });
    if let Err(e) = spawned {
        log::warn!("cannot start a thread to free memory ({e}); it is freed later");
    }
}

/// Hands the heap's free memory back to the kernel. A million-entry push parses, validates
/// and compiles through a few hundred MiB that glibc keeps otherwise (measured: the agent's
/// RSS 608 MiB before, 414 MiB after, with the same policy in force).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl<B: MapBackend> AgentState<B> {
    /// Publishes the union of the layers (only what changed is rewritten).
    pub fn apply(&mut self, trigger: &str) -> Result<ApplyStats, DataplaneError> {
        let started = Instant::now();
        if self.central_desired.is_none() {
            self.central_desired = Some(mssp_core::dataplane::Desired::from_policy(&self.policy));
        }
        if self
            .central_expiries
            .as_ref()
            .is_none_or(|(g, _)| *g != self.policy_gen)
            && let Some(c) = &self.central_desired
        {
            let mut v = c.expiries();
            v.sort_unstable();
            self.central_expiries = Some((self.policy_gen, v));
        }
        let d = self.desired();
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
                self.detection = std::sync::Arc::new(
                    crate::ips::settings::DetectionSnapshot::build(&self.policy, &self.local),
                );
                self.protected = std::sync::Arc::new(crate::ips::settings::ProtectedSet::build(&d));
                let inputs = (self.policy_gen, self.local.filter_names.clone());
                if self.filter_inputs.as_ref() != Some(&inputs) {
                    let doc = crate::filtering::table_doc(&self.policy, &self.local);
                    match crate::filtering::write_table(
                        &self.store.dir,
                        doc,
                        self.filter_table.as_ref(),
                    ) {
                        Ok(t) => {
                            self.filter_table = Some(t);
                            self.filter_inputs = Some(inputs);
                        }
                        Err(e) => {
                            self.filter_inputs = None;
                            error!("writing the filtering table for the inspector: {e}")
                        }
                    }
                }
                // The table is built only when the log is due (it is a million rows at most).
                if self.idlog.needs_compaction(self.dp.assignments())
                    && let Err(e) = self.idlog.maybe_compact(&self.dp.id_table())
                {
                    warn!("compacting the id log: {e}");
                }
                if self.dp.reclaim_due()
                    && let Some(w) = &self.reclaim_wake
                {
                    w.notify_one();
                }
                log::debug!("apply: done in {:?}", started.elapsed());
            }
            Err(e) => self.last_error = Some(format!("{trigger}: {e}")),
        }
        r
    }

    /// Reclaims what the last apply replaced (after the RCU barrier), journaling what it
    /// released.
    pub fn reclaim(&mut self) {
        let idlog = &mut self.idlog;
        if let Err(e) = self.dp.reclaim(&mut |j| idlog.record(j)) {
            warn!("reclaiming what the last apply replaced: {e}");
        }
    }

    /// Finishes a reclaim begun with `Dataplane::take_reclaim` once its barrier returned.
    pub fn finish_reclaim(
        &mut self,
        t: mssp_core::dataplane::ReclaimTicket,
        barrier: mssp_core::dataplane::backend::OpResult,
    ) {
        match self.dp.finish_reclaim(t, barrier) {
            Ok(released) => {
                let idlog = &mut self.idlog;
                mssp_core::dataplane::record_released(&mut |j| idlog.record(j), &released);
            }
            Err(e) => warn!("reclaiming what the last apply replaced: {e}"),
        }
    }

    /// Lets applies return before reclaiming; `wake` is told when there is something to
    /// reclaim, and whoever holds it calls [`AgentState::reclaim`].
    pub fn defer_reclaim(&mut self, wake: std::sync::Arc<tokio::sync::Notify>) {
        self.dp.set_defer_reclaim(true);
        self.reclaim_wake = Some(wake);
    }

    /// Replaces the central layer: applied first, then persisted, so what the state
    /// directory holds is always something that was enforced. If it cannot be persisted, the
    /// previous policy is put back (a restart would otherwise silently roll back to it).
    ///
    /// `body` is the document's bytes as received, which `policy` was parsed from:
    /// central.json keeps them, written while the policy is applied.
    pub fn set_central(
        &mut self,
        policy: Policy,
        body: &[u8],
        origin: Origin,
        trigger: &str,
    ) -> Result<ApplyStats, AgentError> {
        let old = self.replace_policy(policy);
        let store = self.store.clone();
        let (applied, draft) = std::thread::scope(|s| {
            let drafting = s.spawn(|| store.draft_central(body));
            let applied = self.apply(trigger);
            (applied, drafting.join())
        });
        let stats = match applied {
            Ok(stats) => stats,
            Err(e) => {
                // The draft, if any, is discarded as it drops.
                self.replace_policy(old);
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
        let saved = match draft {
            Ok(Ok(d)) => self.store.commit_central(d, &meta),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(state_err(
                &self.store.central_path(),
                "the thread writing it failed",
            )),
        };
        log::debug!("central policy persisted in {:?}", t.elapsed());
        if let Err(e) = saved {
            error!("{e}; putting the previous central policy back");
            self.replace_policy(old);
            if let Err(e2) = self.apply("rollback") {
                error!("re-applying the previous central policy failed too: {e2}");
            }
            return Err(e.into());
        }
        self.central = Some(meta);
        // The state directory holds the whole document now; memory keeps it slim.
        let lists = self.policy.slim_doc();
        dispose((old, lists));
        Ok(stats)
    }

    /// The central document in force, whole: from memory, or from the state directory when
    /// memory holds it slim (it was written there before the slimming, and is rewritten only
    /// with the policy it belongs to).
    pub fn central_doc(&self) -> Result<mssp_core::policy::PolicyDoc, StateError> {
        if !self.policy.doc_slim {
            return Ok(self.policy.doc.clone());
        }
        let path = self.store.central_path();
        match self.store.load_central_doc()? {
            Some(doc) if doc.version == self.policy.version => Ok(doc),
            Some(doc) => Err(state_err(
                &path,
                format!(
                    "holds version {}, not the {} in force",
                    doc.version, self.policy.version
                ),
            )),
            None => Err(state_err(
                &path,
                "missing, but a central policy is in force",
            )),
        }
    }

    /// A copy of the policy with its document whole (for putting it back later).
    pub fn policy_with_whole_doc(&self) -> Result<Policy, StateError> {
        let mut p = self.policy.clone();
        if p.doc_slim {
            p.doc = self.central_doc()?;
            p.doc_slim = false;
        }
        Ok(p)
    }

    /// Puts a central layer back as it was (a reload that could not finish); `policy`'s
    /// document must be whole ([`AgentState::policy_with_whole_doc`]).
    pub fn restore_central(&mut self, policy: Policy, meta: Option<CentralMeta>) {
        self.replace_policy(policy);
        self.central = meta.clone();
        if let Err(e) = self.apply("rollback") {
            error!("re-applying the previous central policy failed: {e}");
        }
        let saved = match &meta {
            Some(_) if self.policy.doc_slim => Err(state_err(
                &self.store.central_path(),
                "the previous document was not kept whole (see `policy_with_whole_doc`)",
            )),
            Some(m) => self.store.save_central(m, &self.policy.doc),
            None => self.store.remove_central(),
        };
        match saved {
            Ok(()) if meta.is_some() => dispose(self.policy.slim_doc()),
            Ok(()) => {}
            Err(e) => error!("writing back the previous central policy failed: {e}"),
        }
    }

    /// Replaces the local layer: applied first, persisted once enforced. If it cannot be
    /// applied or persisted, the previous layer is put back in memory and in the maps.
    pub fn set_local(
        &mut self,
        mut local: LocalFile,
        trigger: &str,
    ) -> Result<ApplyStats, AgentError> {
        local.version = self.local.version + 1;
        let old = std::mem::replace(&mut self.local, local);
        let stats = match self.apply(trigger) {
            Ok(stats) => stats,
            Err(e) => {
                self.local = old;
                return Err(e.into());
            }
        };
        if let Err(e) = self.store.save_local(&self.local) {
            error!("{e}; putting the previous local layer back");
            self.local = old;
            if let Err(e2) = self.apply("rollback") {
                error!("re-applying the previous local layer failed too: {e2}");
            }
            return Err(e.into());
        }
        Ok(stats)
    }

    /// Installs a central policy (nothing is applied); returns the previous one.
    pub fn replace_policy(&mut self, policy: Policy) -> Policy {
        self.central_desired = None;
        self.policy_gen += 1;
        std::mem::replace(&mut self.policy, policy)
    }

    /// The union of the layers as it should be in force.
    pub fn desired(&self) -> mssp_core::dataplane::Desired {
        match &self.central_desired {
            Some(c) => crate::layers::desired_over(
                c.clone(),
                &self.policy,
                &self.local,
                &self.auto,
                &self.fleet,
            ),
            None => desired(&self.policy, &self.local, &self.auto, &self.fleet),
        }
    }

    /// Puts one fleet decision in force (or, `removed`, takes it out): checked against this
    /// edge's policy, published, then persisted; on any failure the fleet layer is as
    /// before and the error says why (the edge acks it as refused).
    pub fn set_fleet(&mut self, d: &mssp_wire::fleet::Decision) -> Result<(), String> {
        if !d.removed {
            crate::layers::fleet_item(d, &self.desired())?;
        }
        let old = self.fleet.clone();
        self.fleet.retain(|f| f.id != d.id);
        let now = OffsetDateTime::now_utc();
        self.fleet.retain(|f| f.expires > now);
        if !d.removed && d.expires > now {
            self.fleet.push(d.clone());
        }
        if self.fleet == old {
            return Ok(());
        }
        if let Err(e) = self.apply("fleet") {
            self.fleet = old;
            return Err(e.to_string());
        }
        if let Err(e) = self.store.save_fleet(&self.fleet) {
            self.fleet = old;
            let _ = self.apply("fleet (undo)");
            return Err(e.to_string());
        }
        Ok(())
    }

    /// Replaces the auto layer (the detector's mitigations). Nothing is persisted here: the
    /// attacks file the detector writes is what a restart rebuilds the layer from. If it
    /// cannot be applied, the previous auto layer stays in force and the error is returned.
    pub fn set_auto(
        &mut self,
        auto: Vec<mssp_detect::engine::AutoItem>,
    ) -> Result<ApplyStats, AgentError> {
        let old = std::mem::replace(&mut self.auto, auto);
        match self.apply("detection") {
            Ok(s) => Ok(s),
            Err(e) => {
                self.auto = old;
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
        let mut local = self.local.clone();
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut local.entries)
            .into_iter()
            .partition(|e| e.expires.is_some_and(|t| t <= now));
        local.entries = kept;
        if !expired.is_empty() {
            info!("{} local entries expired", expired.len());
            let r = self.set_local(local, "expiry");
            for e in &expired {
                crate::audit::record(&crate::audit::Event {
                    who: "agent (expiry)",
                    what: "expiry",
                    target: serde_json::json!({"scope": e.scope.label().to_string(),
                        "prefix": e.prefix, "action": e.action.name(), "added_by": e.by.who}),
                    comment: e.comment.as_deref(),
                    result: crate::audit::outcome(&r),
                });
            }
            r?;
        } else {
            self.apply("expiry")?;
        }
        Ok(())
    }

    /// Why what the kernel does differs from what this agent believes (empty: it does not):
    /// missing interfaces, links gone or running another program, records not as published.
    pub fn drift(&self, pin_dir: &std::path::Path) -> Vec<String> {
        let mut d: Vec<String> = self
            .missing
            .iter()
            .map(|m| format!("{m}: configured but no such interface; not filtered"))
            .collect();
        d.extend(self.host.verify(pin_dir, &self.attached));
        d.extend(self.dp.verify());
        d
    }

    /// When the next entry of any layer expires.
    /// When the next entry or rule of any layer expires. The central layer's come from
    /// [`AgentState::central_expiries`]; the other layers are small and read directly (an
    /// expiry there that the union overrides only wakes the expiry task once for nothing).
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        let now = OffsetDateTime::now_utc();
        let central = match &self.central_expiries {
            Some((generation, v)) if *generation == self.policy_gen => {
                v.get(v.partition_point(|t| *t <= now)).copied()
            }
            // Not built yet for this policy: the union, exactly.
            _ => return self.desired().next_expiry(now),
        };
        let local = self.local.entries.iter().filter_map(|e| e.expires);
        let auto = self.auto.iter().map(|a| a.expires);
        let fleet = self.fleet.iter().filter(|f| !f.removed).map(|f| f.expires);
        central
            .into_iter()
            .chain(local)
            .chain(auto)
            .chain(fleet)
            .filter(|t| *t > now)
            .min()
    }
}
