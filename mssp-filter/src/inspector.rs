//! The inspector: one AF_XDP socket per queue of every customer interface, polled by one
//! thread that reads each steered packet's name, decides, and re-injects or answers. It
//! beats a heartbeat into the data path every 100 ms; XDP stops steering to it when the
//! beat is a second old (a stalled inspector), and at once when its sockets close (a dead
//! one): filtering fails open.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, XskMap};
use mssp_common::{
    abi::{config_index, map_names},
    filter::{FlowKey, HEARTBEAT_EVERY_NS, MAX_CUSTOMER_IFACES, MAX_QUEUES, flow_verdict},
};

use crate::{
    flow::{Ctx, Held},
    inject::Injector,
    packet::PORT,
    stats::{Report, SocketReport, Stats, unix_ms},
    table::{FilterTable, TableDoc},
    xsk::Xsk,
};

/// Where the agent puts the table and finds the report.
pub const TABLE_FILE: &str = "filtering.json";
pub const REPORT_FILE: &str = "filter-stats.json";

#[derive(Clone, Debug)]
pub struct Settings {
    /// The customer-facing interfaces.
    pub interfaces: Vec<String>,
    /// The pinned maps' directory (`pin_dir/v<ABI>`).
    pub maps_dir: PathBuf,
    pub state_dir: PathBuf,
    /// "auto", "copy" or "zerocopy".
    pub xdp_mode: String,
    pub inject_device: String,
    /// How long a split request is held for its rest.
    pub hold: Duration,
}

struct Maps {
    flows: BpfHashMap<MapData, FlowKey, u32>,
    config: Array<MapData, u64>,
}

fn open_map(dir: &Path, name: &str) -> Result<Map, String> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        format!(
            "{}: {e} (is the agent running with customer_interfaces?)",
            path.display()
        )
    })?;
    Map::from_map_data(data).map_err(|e| format!("{}: {e}", path.display()))
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, which the heartbeat is read with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own. CLOCK_MONOTONIC is bpf_ktime_get_ns.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn rx_queues(ifname: &str) -> u32 {
    fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .clamp(1, MAX_QUEUES)
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("{name:?}: bad interface name"))?;
    // SAFETY: reads a valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(format!("{name}: no such interface")),
        i => Ok(i),
    }
}

pub struct Inspector {
    settings: Settings,
    socks: Vec<(SocketReport, Xsk)>,
    maps: Maps,
    injector: Injector,
    table: Arc<FilterTable>,
    held: HashMap<FlowKey, Held>,
    decided: HashMap<FlowKey, (bool, Instant)>,
    stats: Stats,
    started_unix: u64,
    /// Kept so the sockets' map entries are ours while we run.
    _xsks: XskMap<MapData>,
}

impl Inspector {
    /// Opens the sockets and registers them with the data path.
    pub fn open(settings: Settings) -> Result<Inspector, String> {
        if settings.interfaces.len() > MAX_CUSTOMER_IFACES as usize {
            return Err(format!(
                "{} customer interfaces; the inspector serves at most {MAX_CUSTOMER_IFACES}",
                settings.interfaces.len()
            ));
        }
        let dir = &settings.maps_dir;
        let mut xsks =
            XskMap::try_from(open_map(dir, map_names::XSKS)?).map_err(|e| e.to_string())?;
        let mut base_map: BpfHashMap<MapData, u32, u32> =
            BpfHashMap::try_from(open_map(dir, map_names::XSK_BASE)?).map_err(|e| e.to_string())?;
        let flows =
            BpfHashMap::try_from(open_map(dir, map_names::FLOWS)?).map_err(|e| e.to_string())?;
        let config =
            Array::try_from(open_map(dir, map_names::CONFIG)?).map_err(|e| e.to_string())?;
        let injector = Injector::open(&settings.inject_device)
            .map_err(|e| format!("re-injection device {}: {e}", settings.inject_device))?;
        let mut socks = Vec::new();
        for (i, ifname) in settings.interfaces.iter().enumerate() {
            let idx = ifindex(ifname)?;
            let base = i as u32 * MAX_QUEUES;
            for q in 0..rx_queues(ifname) {
                let x = Xsk::open(ifname, q, &settings.xdp_mode)
                    .map_err(|e| format!("{ifname} queue {q}: AF_XDP socket: {e}"))?;
                xsks.set(base + q, x.fd(), 0)
                    .map_err(|e| format!("{ifname} queue {q}: registering the socket: {e}"))?;
                let mode = if x.zerocopy { "zerocopy" } else { "copy" };
                log::info!("{ifname} queue {q}: AF_XDP socket bound ({mode} mode)");
                socks.push((
                    SocketReport {
                        interface: ifname.clone(),
                        queue: q,
                        mode: mode.into(),
                    },
                    x,
                ));
            }
            base_map
                .insert(idx, base, 0)
                .map_err(|e| format!("{ifname}: registering the interface: {e}"))?;
        }
        Ok(Inspector {
            settings,
            socks,
            maps: Maps { flows, config },
            injector,
            table: Arc::new(FilterTable::default()),
            held: HashMap::new(),
            decided: HashMap::new(),
            stats: Stats::default(),
            started_unix: unix_ms() / 1000,
            _xsks: xsks,
        })
    }

    fn beat(&mut self) {
        if let Err(e) = self
            .maps
            .config
            .set(config_index::FILTER_HEARTBEAT, monotonic_ns(), 0)
        {
            log::warn!("heartbeat: {e}");
        }
    }

    /// Runs until `stop` is set. The table is (re)loaded from the state directory by a
    /// thread of its own, so a million-name reload never stalls the packets (or the beat).
    pub fn run(mut self, stop: Arc<AtomicBool>) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        let path = self.settings.state_dir.join(TABLE_FILE);
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("mssp-filter-table".into())
            .spawn(move || watch_table(&path, tx, &stop2))
            .map_err(|e| e.to_string())?;
        let mut last_beat = 0u64;
        let mut last_report = Instant::now() - Duration::from_secs(10);
        let mut fds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|(_, x)| libc::pollfd {
                fd: x.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            let now = monotonic_ns();
            if now.saturating_sub(last_beat) >= HEARTBEAT_EVERY_NS {
                self.beat();
                last_beat = now;
            }
            while let Ok(t) = rx.try_recv() {
                log::info!("filtering table generation {} in force", t.generation);
                self.table = t;
            }
            // SAFETY: poll over descriptors we own.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
            for i in 0..self.socks.len() {
                self.drain(i);
            }
            self.expire_held();
            if last_report.elapsed() >= Duration::from_secs(1) {
                self.decided
                    .retain(|_, (_, t)| t.elapsed() <= Duration::from_secs(5));
                self.write_report();
                last_report = Instant::now();
            }
        }
        // A clean stop: XDP stops steering at once.
        let _ = self.maps.config.set(config_index::FILTER_HEARTBEAT, 0, 0);
        self.write_report();
        Ok(())
    }

    fn drain(&mut self, i: usize) {
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let (_, xsk) = &mut self.socks[i];
        let table = self.table.clone();
        let mut ctx = Ctx {
            table: &table,
            injector: &mut self.injector,
            flows: &mut self.maps.flows,
            held: &mut self.held,
            decided: &mut self.decided,
            stats: &mut self.stats,
            replies: &mut replies,
        };
        loop {
            let n = xsk.receive(64, |frame| ctx.handle(frame));
            if n == 0 {
                break;
            }
            for r in ctx.replies.drain(..) {
                xsk.send(&r);
            }
        }
    }

    /// Split requests whose rest did not come: let through as they are (fail-open).
    fn expire_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let hold = self.settings.hold;
        let late: Vec<FlowKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.since.elapsed() >= hold)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(h) = self.held.remove(&k) {
                let customer = self.table.customer_of(key_src(&k));
                self.stats.customer(customer).hold_timeout += 1;
                for mut f in h.frames {
                    let _ = self.injector.inject(&mut f);
                }
                if k.dport != PORT::DNS {
                    let _ = self.maps.flows.insert(k, flow_verdict::ALLOW, 0);
                }
            }
        }
    }

    fn write_report(&self) {
        let table = &self.table;
        let (totals, customers, top_blocked, recent) = self
            .stats
            .report(|id| table.customer_name(id).map(String::from));
        let r = Report {
            pid: std::process::id(),
            started_unix: self.started_unix,
            updated_unix_ms: unix_ms(),
            generation: table.generation,
            inject_device: self.injector.name.clone(),
            sockets: self.socks.iter().map(|(s, _)| s.clone()).collect(),
            totals,
            customers,
            top_blocked,
            recent,
        };
        let path = self.settings.state_dir.join(REPORT_FILE);
        let tmp = path.with_extension("json.tmp");
        if let Ok(b) = serde_json::to_vec(&r)
            && fs::write(&tmp, b).is_ok()
        {
            let _ = fs::rename(&tmp, &path);
        }
    }
}

fn key_src(k: &FlowKey) -> std::net::IpAddr {
    if k.v6 != 0 {
        let mut o = [0u8; 16];
        for (i, w) in k.src.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        std::net::IpAddr::from(o)
    } else {
        std::net::IpAddr::from(k.src[0].to_be_bytes())
    }
}

fn watch_table(path: &Path, tx: mpsc::Sender<Arc<FilterTable>>, stop: &AtomicBool) {
    let mut seen: Option<(SystemTime, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let stamp = fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp != seen {
            seen = stamp;
            match fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<TableDoc>(&b).map_err(|e| e.to_string()))
                .and_then(|d| FilterTable::from_doc(&d))
            {
                Ok(t) => {
                    if tx.send(Arc::new(t)).is_err() {
                        return;
                    }
                }
                Err(e) => log::error!("{}: {e}; the table in force is kept", path.display()),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
