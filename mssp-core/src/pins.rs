//! The pinned data plane under `pin_dir`:
//!
//! ```text
//! pin_dir/v<ABI>/<MAP>     every policy and counter map (versioned by the map ABI)
//! pin_dir/v<ABI>/prog      the program currently loaded
//! pin_dir/links/<ifname>   one bpf_link per filtered interface
//! ```
//!
//! Links keep the filter running when no agent does. A starting agent reuses the pinned maps
//! (policy and counters survive) and swaps its freshly loaded program in under each existing
//! link with `bpf_link_update`: no detach, no second attachment, no gap.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::MapInfo,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use log::{info, warn};
use mssp_common::abi::ABI_VERSION;

use crate::{
    capacity::{Capacities, ncpus},
    dataplane::sys,
    loader::{self, CUSTOMER_PROGRAM_NAME, LoadError, LoadOptions, PROGRAM_NAME},
};

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) XDP, falling back to generic (skb) mode with a warning where the
    /// driver has no native XDP.
    #[default]
    Auto,
    /// Native XDP only; fail if the driver cannot.
    Native,
    /// Generic XDP (skb mode).
    Skb,
}

/// One interface to filter and how.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
    #[serde(default)]
    pub mode: AttachMode,
    /// A customer-facing interface (`customer_interfaces`): it runs the content-filtering
    /// program, which finds the customer by source, instead of the firewall.
    #[serde(skip)]
    pub customer: bool,
}

impl InterfaceConfig {
    /// The program this interface runs.
    pub fn program(&self) -> &'static str {
        if self.customer {
            CUSTOMER_PROGRAM_NAME
        } else {
            PROGRAM_NAME
        }
    }
}

/// What the pinned data plane is made of: where it lives, the map sizes, and the interfaces
/// it filters.
#[derive(Clone, Debug)]
pub struct PinSpec {
    pub pin_dir: PathBuf,
    pub capacities: Capacities,
    pub interfaces: Vec<InterfaceConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pin_dir {dir}: {message}")]
    Dir { dir: String, message: String },
    #[error(
        "{dir} holds pins of mssp data-plane ABI {found}; this agent speaks v{expected}. They were \
         left untouched and keep filtering. To upgrade without a gap, start this agent once with \
         --replace-pins: it loads the new program with fresh maps, republishes the policy from \
         the state directory, and swaps it in under the existing links"
    )]
    Incompatible {
        dir: String,
        found: String,
        expected: u32,
    },
    #[error(
        "map {name} pinned at {path} has {found}, but this agent expects {expected}. It was left \
         untouched and keeps filtering; to resize without a gap, start the agent once with \
         --replace-pins"
    )]
    MapMismatch {
        name: String,
        path: String,
        found: String,
        expected: String,
    },
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("pinning the program at {path}: {message}")]
    PinProgram { path: String, message: String },
    #[error("interface {name}: {message}")]
    Interface { name: String, message: String },
    #[error(
        "another mssp agent{} is filtering with the pins in {dir}; this one stops rather than \
         take over its filter. Stop that agent first (`systemctl stop mssp`), or give this one \
         its own pin_dir",
        .holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Busy { dir: String, holder: Option<u32> },
}

/// The pins under `pin_dir` belong to one agent at a time: an exclusive `flock` on the
/// directory itself (bpffs holds no regular files), held for the agent's life.
#[derive(Debug)]
pub struct PinLock {
    _dir: fs::File,
}

/// Takes the pins' lock, or says who holds it. `pin_dir` must exist.
pub fn lock(pin_dir: &Path) -> Result<PinLock, PinError> {
    use std::os::{fd::AsRawFd, unix::fs::OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(pin_dir)
        .map_err(|e| dir_err(pin_dir, format!("cannot open it: {e}")))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(PinError::Busy {
            dir: pin_dir.display().to_string(),
            holder: lock_holder(pin_dir),
        });
    }
    Ok(PinLock { _dir: f })
}

/// Whether an agent holds the pins' lock now (and its pid, when /proc/locks says).
pub fn locked_by(pin_dir: &Path) -> Option<Option<u32>> {
    match lock(pin_dir) {
        Ok(_) => None,
        Err(PinError::Busy { holder, .. }) => Some(holder),
        Err(_) => None,
    }
}

/// The pid holding a flock on `path`, from /proc/locks (`… FLOCK ADVISORY WRITE pid maj:min:ino …`).
fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(path).ok()?.ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (kind, pid, dev) = (f.get(1)?, f.get(4)?, f.get(5)?);
        (*kind == "FLOCK" && dev.rsplit(':').next()?.parse::<u64>().ok()? == ino)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

/// How an interface is being filtered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    pub name: String,
    pub ifindex: u32,
    /// "native" or "skb".
    pub mode: String,
    pub link_id: u32,
    pub prog_id: u32,
    /// The link existed and the program was swapped in under it.
    pub adopted: bool,
}

pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn abi_dir(&self) -> PathBuf {
        self.root.join(format!("v{ABI_VERSION}"))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.abi_dir().join(name)
    }

    pub fn prog(&self) -> PathBuf {
        self.abi_dir().join("prog")
    }

    pub fn customer_prog(&self) -> PathBuf {
        self.abi_dir().join("prog-customer")
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, ifname: &str) -> PathBuf {
        self.links().join(ifname)
    }
}

fn dir_err(dir: &Path, message: impl Into<String>) -> PinError {
    PinError::Dir {
        dir: dir.display().to_string(),
        message: message.into(),
    }
}

/// Whether this process shares the mount namespace of pid 1 (the host's, or its
/// container's): only then does a mount it makes outlive it.
fn in_init_mount_namespace() -> bool {
    match (
        fs::read_link("/proc/self/ns/mnt"),
        fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Makes sure `root` is a directory on a bpffs. If its filesystem is not one, a bpffs is
/// mounted there — but only where that mount outlives the agent (its mount namespace is
/// pid 1's); in a private mount namespace the pins, and the filter with them, would vanish
/// when the agent stops, so that is refused.
pub fn prepare_dir(root: &Path) -> Result<(), PinError> {
    let mut existing = root.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            break;
        }
    }
    let on_bpffs = sys::is_bpffs(&existing).map_err(|e| dir_err(&existing, e.to_string()))?;
    fs::create_dir_all(root).map_err(|e| dir_err(root, format!("cannot create it: {e}")))?;
    if on_bpffs || sys::is_bpffs(root).unwrap_or(false) {
        return Ok(());
    }
    if !in_init_mount_namespace() {
        return Err(dir_err(
            root,
            format!(
                "it is not on a bpffs, and this agent runs in a private mount namespace (systemd's \
                 ProtectSystem/PrivateTmp, `ip netns exec`, ...): a bpffs mounted here would vanish \
                 with the agent, and the filter with it. Mount one on the host first \
                 (`mount -t bpf bpffs {}`; systemd mounts /sys/fs/bpf at boot)",
                root.display()
            ),
        ));
    }
    sys::mount_bpffs(root).map_err(|e| {
        dir_err(
            root,
            format!(
                "it is not on a bpffs and mounting one failed ({e}); mount it (`mount -t bpf bpffs {}`) \
                 or give the agent CAP_SYS_ADMIN",
                root.display()
            ),
        )
    })?;
    info!(
        "mounted a bpffs at {} (in the host's mount namespace, so the pins outlive this agent)",
        root.display()
    );
    Ok(())
}

/// Pinned ABI versions other than ours ("v3", ...).
fn other_versions(root: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mine = format!("v{ABI_VERSION}");
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('v') && n[1..].parse::<u32>().is_ok() && *n != mine)
        .collect();
    v.sort();
    v
}

/// Checks that every pinned map has the shape this build expects; returns whether any map
/// was pinned at all.
fn check_pinned_maps(layout: &Layout, caps: &Capacities) -> Result<bool, PinError> {
    let mut any = false;
    for loader::Shape {
        name,
        key_size,
        value_size,
        entries,
    } in loader::expected_shapes(caps, ncpus())
    {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let info = MapInfo::from_pin(&path).map_err(|e| PinError::MapMismatch {
            name: name.into(),
            path: path.display().to_string(),
            found: format!("no readable map ({e})"),
            expected: "a map".into(),
        })?;
        if info.value_size() != value_size
            || info.max_entries() != entries
            || info.key_size() != key_size
        {
            return Err(PinError::MapMismatch {
                name: name.into(),
                path: path.display().to_string(),
                found: format!(
                    "{} entries of {} bytes",
                    info.max_entries(),
                    info.value_size()
                ),
                expected: format!("{entries} entries of {value_size} bytes"),
            });
        }
    }
    Ok(any)
}

/// Loads the program over the pinned maps (creating and pinning the ones that are missing).
/// With `replace`, pins of another ABI or shape are first moved aside (they keep serving
/// the running filter until the links are swapped; see [`retire_old`]).
pub fn load(spec: &PinSpec, replace: bool) -> Result<(Ebpf, bool), PinError> {
    let pin_dir = &spec.pin_dir;
    let layout = Layout::new(pin_dir);
    prepare_dir(pin_dir)?;
    let caps = spec.capacities;
    let others = other_versions(pin_dir);
    if !others.is_empty() && !replace {
        return Err(PinError::Incompatible {
            dir: pin_dir.display().to_string(),
            found: others.join(", "),
            expected: ABI_VERSION,
        });
    }
    let existing = match check_pinned_maps(&layout, &caps) {
        Ok(any) => any,
        Err(e) if replace => {
            warn!("{e}; moving the old maps aside (--replace-pins)");
            retire_dir(pin_dir, &layout.abi_dir())?;
            false
        }
        Err(e) => return Err(e),
    };
    if replace {
        for v in &others {
            retire_dir(pin_dir, &pin_dir.join(v))?;
        }
    }
    fs::create_dir_all(layout.abi_dir()).map_err(|e| dir_err(&layout.abi_dir(), e.to_string()))?;

    let mut ebpf = loader::load(&LoadOptions {
        capacities: Some(caps),
        pin_maps: Some(layout.abi_dir()),
        ..LoadOptions::default()
    })?;
    for (name, path) in [
        (PROGRAM_NAME, layout.prog()),
        (CUSTOMER_PROGRAM_NAME, layout.customer_prog()),
    ] {
        let prog = xdp_mut(&mut ebpf, name)?;
        let _ = fs::remove_file(&path);
        prog.pin(&path).map_err(|e| PinError::PinProgram {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok((ebpf, existing))
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, PinError> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::Load(format!("the object has no program {name}")))?
        .try_into()
        .map_err(|e| LoadError::Load(format!("{e}")))?)
}

/// Moves a pin directory aside (bpffs supports rename); its objects live on while the
/// running filter uses them.
fn retire_dir(root: &Path, dir: &Path) -> Result<(), PinError> {
    if !dir.exists() {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let to = root.join(format!("retired-{name}-{}", std::process::id()));
    fs::rename(dir, &to).map_err(|e| dir_err(dir, format!("cannot move it aside: {e}")))?;
    info!("moved {} to {}", dir.display(), to.display());
    Ok(())
}

/// Removes retired pin directories once the links run the new program.
pub fn retire_old(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("retired-") {
            if let Ok(inner) = fs::read_dir(e.path()) {
                for f in inner.filter_map(|f| f.ok()) {
                    let _ = fs::remove_file(f.path());
                }
            }
            match fs::remove_dir(e.path()) {
                Ok(()) => info!("removed retired pins {name}"),
                Err(err) => warn!("cannot remove retired pins {name}: {err}"),
            }
        }
    }
}

fn ifindex(name: &str) -> Result<u32, PinError> {
    let c = CString::new(name).map_err(|_| PinError::Interface {
        name: name.into(),
        message: "bad interface name".into(),
    })?;
    // SAFETY: if_nametoindex reads a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(PinError::Interface {
            name: name.into(),
            message: "not found; `ip link` lists the interfaces".into(),
        });
    }
    Ok(idx)
}

fn pinned_link(path: &Path) -> Option<(PinnedLink, sys::XdpLinkInfo)> {
    let info = sys::pinned_link_info(path).ok()?;
    let link = PinnedLink::from_pin(path).ok()?;
    Some((link, info))
}

/// Puts the loaded program on every configured interface: under the existing pinned link
/// when there is one (atomic swap), otherwise through a new link that is pinned at once.
/// Links of interfaces no longer configured are removed (filtering stops there).
/// With `allow_missing`, interfaces that do not exist (yet) are skipped and named in the
/// result (the agent starts degraded and retries); without it, a missing interface is an
/// error and nothing changes.
pub fn attach_all(
    ebpf: &mut Ebpf,
    spec: &PinSpec,
    known_modes: &std::collections::HashMap<String, String>,
    allow_missing: bool,
) -> Result<AttachResult, PinError> {
    let layout = Layout::new(&spec.pin_dir);
    fs::create_dir_all(layout.links()).map_err(|e| dir_err(&layout.links(), e.to_string()))?;
    let wanted = &spec.interfaces;
    // Every interface must exist before anything changes (or is skipped, with allow_missing).
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for i in wanted {
        match ifindex(&i.name) {
            Ok(idx) => present.push((i, idx)),
            Err(e) if !allow_missing => return Err(e),
            Err(_) => missing.push(i.name.clone()),
        }
    }
    let mut out = Vec::new();
    // Links made by this call, removed again (detaching) if a later interface fails.
    let mut created: Vec<PathBuf> = Vec::new();
    for (cfg, idx) in present {
        let (name, mode) = (&cfg.name, cfg.mode);
        let prog = xdp_mut(ebpf, cfg.program())?;
        let prog_id = prog.info().map(|i| i.id()).unwrap_or(0);
        match attach_one(prog, &layout, name, mode, idx, known_modes) {
            Ok((a, new)) => {
                if new {
                    created.push(layout.link(name));
                }
                out.push(Attached { prog_id, ..a });
            }
            Err(e) => {
                for p in created {
                    let _ = fs::remove_file(&p);
                }
                return Err(e);
            }
        }
    }
    // Interfaces dropped from the config.
    if let Ok(rd) = fs::read_dir(layout.links()) {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if !wanted.iter().any(|w| w.name == n) {
                info!("{n}: no longer configured; removing its link (filtering stops there)");
                let _ = fs::remove_file(e.path());
            }
        }
    }
    for m in &missing {
        warn!("{m}: no such interface (yet); not filtered until it appears");
    }
    Ok(AttachResult {
        attached: out,
        missing,
    })
}

/// What [`attach_all`] did.
#[derive(Clone, Debug, Default)]
pub struct AttachResult {
    pub attached: Vec<Attached>,
    /// Configured interfaces that do not exist.
    pub missing: Vec<String>,
}

/// What the kernel says is different from what the agent believes of its interfaces: each
/// attached interface's pinned link must exist, be an XDP link on that interface (which
/// must still exist), and run the program it was given (`Attached::prog_id`).
pub fn verify_links(pin_dir: &Path, attached: &[Attached]) -> Vec<String> {
    let layout = Layout::new(pin_dir);
    let mut drift = Vec::new();
    for a in attached {
        let prog_id = a.prog_id;
        let path = layout.link(&a.name);
        match sys::pinned_link_info(&path) {
            Err(e) => drift.push(format!(
                "{}: its pinned link {} is gone ({e}); the interface is not filtered",
                a.name,
                path.display()
            )),
            Ok(info) if info.ifindex == 0 => drift.push(format!(
                "{}: its link is defunct (the interface went away); the interface is not filtered",
                a.name
            )),
            Ok(info) if info.ifindex != a.ifindex => drift.push(format!(
                "{}: its link is on ifindex {}, not {}",
                a.name, info.ifindex, a.ifindex
            )),
            Ok(info) if prog_id != 0 && info.prog_id != prog_id => drift.push(format!(
                "{}: the link runs program {}, not this agent's {prog_id}",
                a.name, info.prog_id
            )),
            Ok(_) => {
                if ifindex(&a.name).ok() != Some(a.ifindex) {
                    drift.push(format!(
                        "{}: the interface is gone or was renumbered",
                        a.name
                    ));
                }
            }
        }
    }
    drift
}

/// The ifindex of every interface of `spec`, or the first that does not exist.
pub fn check_interfaces(spec: &PinSpec) -> Result<Vec<u32>, PinError> {
    spec.interfaces.iter().map(|i| ifindex(&i.name)).collect()
}

/// Whether an interface of that name exists (in this network namespace).
pub fn interface_exists(name: &str) -> bool {
    ifindex(name).is_ok()
}

/// The id of the loaded program.
pub fn program_id(ebpf: &Ebpf) -> u32 {
    ebpf.program(PROGRAM_NAME)
        .and_then(|p| <&Xdp>::try_from(p).ok())
        .and_then(|p| p.info().ok())
        .map_or(0, |i| i.id())
}

/// One interface: the program swapped in under its pinned link, or a new pinned link.
/// Returns whether the link is new.
fn attach_one(
    prog: &mut Xdp,
    layout: &Layout,
    name: &String,
    mode: AttachMode,
    idx: u32,
    known_modes: &std::collections::HashMap<String, String>,
) -> Result<(Attached, bool), PinError> {
    {
        let path = layout.link(name);
        let mut adopted = None;
        if path.exists() {
            match pinned_link(&path) {
                Some((link, info))
                    if info.ifindex == idx && info.link_type == sys::BPF_LINK_TYPE_XDP =>
                {
                    let fd: FdLink = link.into();
                    let xdp = XdpLink::try_from(fd).map_err(|e| PinError::Interface {
                        name: name.clone(),
                        message: format!("pinned link is not an XDP link: {e}"),
                    })?;
                    prog.attach_to_link(xdp).map_err(|e| PinError::Interface {
                        name: name.clone(),
                        message: format!(
                            "swapping the program in under the pinned link failed: {e}"
                        ),
                    })?;
                    adopted = Some(info.id);
                }
                other => {
                    warn!(
                        "{name}: pinned link {} is defunct or for another interface ({other:?}); replacing it",
                        path.display()
                    );
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let (link_id, mode_name) = match adopted {
            Some(id) => (
                id,
                known_modes
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
            ),
            None => attach_new(prog, name, idx, mode, &path)?,
        };
        info!(
            "{name}: filtering in {mode_name} mode (link {link_id}, {})",
            if adopted.is_some() {
                "program swapped under the existing link"
            } else {
                "new link"
            }
        );
        Ok((
            Attached {
                name: name.clone(),
                ifindex: idx,
                mode: mode_name,
                link_id,
                prog_id: 0,
                adopted: adopted.is_some(),
            },
            adopted.is_none(),
        ))
    }
}

fn attach_new(
    prog: &mut Xdp,
    name: &str,
    idx: u32,
    mode: AttachMode,
    path: &Path,
) -> Result<(u32, String), PinError> {
    let try_mode = |prog: &mut Xdp, m: XdpMode| prog.attach_to_if_index(idx, m);
    let (id, mode_name) = match mode {
        AttachMode::Skb => (try_mode(prog, XdpMode::Skb), "skb"),
        AttachMode::Native => (try_mode(prog, XdpMode::Driver), "native"),
        AttachMode::Auto => match try_mode(prog, XdpMode::Driver) {
            Ok(id) => (Ok(id), "native"),
            Err(e) if !busy(&e) => {
                warn!(
                    "{name}: the driver has no native XDP ({e}); falling back to skb (generic) mode"
                );
                (try_mode(prog, XdpMode::Skb), "skb")
            }
            Err(e) => (Err(e), "native"),
        },
    };
    let id = id.map_err(|e| PinError::Interface {
        name: name.into(),
        message: if busy(&e) {
            format!(
                "another XDP program is already attached ({e}); detach it (`ip link set dev {name} xdp off`) \
                 or remove it from the config"
            )
        } else {
            format!("attaching in {mode_name} mode failed: {e}")
        },
    })?;
    let link = prog.take_link(id).map_err(|e| PinError::Interface {
        name: name.into(),
        message: e.to_string(),
    })?;
    let fd = FdLink::try_from(link).map_err(|e| PinError::Interface {
        name: name.into(),
        message: format!("the kernel attached through netlink, which cannot be pinned ({e}); mssp needs bpf_link (Linux 5.9+)"),
    })?;
    fd.pin(path).map_err(|e| PinError::Interface {
        name: name.into(),
        message: format!("pinning the link at {}: {e}", path.display()),
    })?;
    let link_id = sys::pinned_link_info(path).map(|i| i.id).unwrap_or(0);
    Ok((link_id, mode_name.to_string()))
}

fn busy(e: &aya::programs::ProgramError) -> bool {
    let s = e.to_string();
    s.contains("Device or resource busy") || s.contains("File exists")
}

/// Removes everything the agent pinned: the links (filtering stops), the program and maps.
pub fn remove_all(root: &Path) -> io::Result<Vec<String>> {
    let layout = Layout::new(root);
    let mut removed = Vec::new();
    if let Ok(rd) = fs::read_dir(layout.links()) {
        for e in rd.filter_map(|e| e.ok()) {
            fs::remove_file(e.path())?;
            removed.push(e.path().display().to_string());
        }
    }
    let _ = fs::remove_dir(layout.links());
    if let Ok(rd) = fs::read_dir(root) {
        for d in rd.filter_map(|e| e.ok()) {
            if d.path().is_dir() {
                if let Ok(inner) = fs::read_dir(d.path()) {
                    for f in inner.filter_map(|f| f.ok()) {
                        fs::remove_file(f.path())?;
                        removed.push(f.path().display().to_string());
                    }
                }
                let _ = fs::remove_dir(d.path());
            }
        }
    }
    Ok(removed)
}
