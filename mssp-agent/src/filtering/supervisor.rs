//! The inspector process: started by the agent when `customer_interfaces` is set
//! (`mssp inspector --config FILE`), restarted `restart_secs` after it exits, stopped with
//! the agent. A process of its own, so a fault in packet parsing never takes the agent (and
//! the firewall's control plane) with it; while it is down, XDP passes everything (its
//! sockets are gone and its heartbeat goes stale): filtering fails open, and says so here.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use mssp_common::{
    abi::{config_index, map_names},
    filter::{HEARTBEAT_TIMEOUT_NS, filter_stat},
};

/// What the agent knows of its inspector.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct InspectorStatus {
    /// Filtering is configured here (customer interfaces).
    pub configured: bool,
    pub pid: Option<u32>,
    pub running: bool,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Milliseconds since the inspector's last heartbeat, as the data path sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_ms: Option<u64>,
    /// The data path is letting every packet through uninspected right now.
    pub fail_open: bool,
    /// The customer program's counters (packets): steered, fail_open, cache_allow, ...
    pub kernel: std::collections::BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Supervisor {
    status: Mutex<InspectorStatus>,
    child: Mutex<Option<Child>>,
    maps: Mutex<
        Option<(
            PathBuf,
            Option<Array<MapData, u64>>,
            Option<PerCpuArray<MapData, u64>>,
        )>,
    >,
}

fn open<T>(dir: &Path, name: &str, f: impl FnOnce(Map) -> Option<T>) -> Option<T> {
    let m = Map::from_map_data(MapData::from_pin(dir.join(name)).ok()?).ok()?;
    f(m)
}

fn pid_alive_inspector(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|a| a == b"inspector"))
        .unwrap_or(false)
}

impl Supervisor {
    /// The status, with the data path's view (heartbeat, counters) read now.
    pub fn status(&self) -> InspectorStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !s.configured {
            return s;
        }
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((dir, config, stats)) = maps.as_mut() {
            if config.is_none() {
                *config = open(dir, map_names::CONFIG, |m| Array::try_from(m).ok());
            }
            if stats.is_none() {
                *stats = open(dir, map_names::FILTER_STATS, |m| {
                    PerCpuArray::try_from(m).ok()
                });
            }
            if let Some(c) = config {
                let beat = c.get(&config_index::FILTER_HEARTBEAT, 0).unwrap_or(0);
                let now = mssp_filter::inspector::monotonic_ns();
                if beat != 0 {
                    s.heartbeat_age_ms = Some(now.saturating_sub(beat) / 1_000_000);
                }
                s.fail_open =
                    beat == 0 || now.saturating_sub(beat) > HEARTBEAT_TIMEOUT_NS || !s.running;
            }
            if let Some(st) = stats {
                for (i, name) in filter_stat::NAMES.iter().enumerate() {
                    if let Ok(v) = st.get(&(i as u32), 0) {
                        s.kernel.insert((*name).into(), v.iter().sum());
                    }
                }
            }
        }
        s
    }

    /// Starts the inspector and keeps it running until `stop` (the agent's shutdown).
    pub fn start(
        self: &Arc<Self>,
        config: PathBuf,
        state_dir: PathBuf,
        maps_dir: PathBuf,
        restart: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::thread::JoinHandle<()> {
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            s.configured = true;
            s.fail_open = true;
        }
        *self.maps.lock().unwrap_or_else(|p| p.into_inner()) = Some((maps_dir, None, None));
        // An inspector left by an agent that crashed holds the sockets: it goes first.
        let pid_file = state_dir.join("inspector.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && pid_alive_inspector(pid)
        {
            log::warn!("stopping the inspector (pid {pid}) a previous agent left running");
            // SAFETY: signalling a process we identified as our inspector.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let t = Instant::now();
            while pid_alive_inspector(pid) && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("mssp-inspector-supervisor".into())
            .spawn(move || me.supervise(&config, &pid_file, restart, stop))
            .expect("spawn the inspector supervisor")
    }

    fn supervise(
        &self,
        config: &Path,
        pid_file: &Path,
        restart: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mssp"));
        while !*stop.borrow() {
            let mut cmd = Command::new(&exe);
            cmd.arg("inspector").arg("--config").arg(config);
            // The inspector dies with the agent (its sockets close: XDP passes everything at
            // once). Never an orphan holding the queues, or a namespace, after a crash; the
            // restarted agent starts a new one.
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let spawned = cmd.spawn();
            let child = match spawned {
                Ok(c) => c,
                Err(e) => {
                    self.exited(format!("cannot start {}: {e}", exe.display()));
                    std::thread::sleep(restart);
                    continue;
                }
            };
            let pid = child.id();
            let _ = std::fs::write(pid_file, pid.to_string());
            log::info!("filtering inspector started (pid {pid})");
            {
                let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                s.pid = Some(pid);
                s.running = true;
            }
            *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
            let exit = loop {
                if *stop.borrow() {
                    self.terminate();
                    return;
                }
                let mut g = self.child.lock().unwrap_or_else(|p| p.into_inner());
                match g.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(st))) => {
                        *g = None;
                        break st.to_string();
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "gone".into(),
                    Some(Ok(None)) => {}
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(100));
            };
            log::error!(
                "filtering inspector (pid {pid}) exited ({exit}); filtering fails open (traffic passes uninspected) until it is back in {restart:?}"
            );
            self.exited(format!(
                "pid {pid}: {exit} at {}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            let t = Instant::now();
            while t.elapsed() < restart && !*stop.borrow() {
                std::thread::sleep(Duration::from_millis(100));
            }
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restarts += 1;
        }
    }

    fn exited(&self, why: String) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.running = false;
        s.pid = None;
        s.last_exit = Some(why);
    }

    /// Stops the inspector (SIGTERM, then SIGKILL after 3 s).
    pub fn terminate(&self) {
        let mut g = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = g.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    self.exited("stopped with the agent".into());
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.exited("stopped with the agent".into());
    }
}
