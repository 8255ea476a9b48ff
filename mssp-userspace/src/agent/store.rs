//! The agent's state directory: the central layer (last applied push), the local layer (the
//! NOC's CLI entries with provenance) and the id log. Files are replaced atomically (temp
//! file, fsync, rename, fsync of the directory); the id log is appended and fsynced.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use mssp_common::{Net, abi::SourceAction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    dataplane::{EntryKey, IdTable, Journal, Layer, Scope, StatKey, StatKind},
    policy::{Capacity, Policy, PolicyDoc, cidr::parse_cidr, validate},
};

/// A state file that cannot be read: the agent stops (the pinned filter keeps running).
#[derive(Debug, thiserror::Error)]
#[error("state file {file}: {message}; fix or remove it (the running filter is untouched)")]
pub struct StateError {
    pub file: String,
    pub message: String,
}

fn state_err(path: &Path, message: impl Into<String>) -> StateError {
    StateError {
        file: path.display().to_string(),
        message: message.into(),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// What the agent says of the central layer it holds (the document itself lives in the
/// validated [`Policy`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CentralMeta {
    pub version: u64,
    /// `sha256:` of the document's bytes as received.
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// Where it came from: "push from CN=… (address)", "file …".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// central.json: the metadata and the document.
#[derive(Serialize)]
struct CentralOut<'a> {
    #[serde(flatten)]
    meta: &'a CentralMeta,
    policy: &'a PolicyDoc,
}

#[derive(Deserialize)]
struct CentralIn {
    #[serde(flatten)]
    meta: CentralMeta,
    policy: PolicyDoc,
}

/// One NOC entry with its provenance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalEntry {
    pub scope: ScopeDoc,
    pub prefix: String,
    pub action: SourceActionDoc,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who added it (the peer's user, and the name the CLI passed).
    pub who: String,
    #[serde(with = "time::serde::rfc3339")]
    pub added: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ScopeDoc {
    Global,
    #[serde(untagged)]
    Customer {
        customer: u32,
    },
}

impl ScopeDoc {
    pub fn scope(self) -> Scope {
        match self {
            ScopeDoc::Global => Scope::Global,
            ScopeDoc::Customer { customer } => Scope::Customer(customer),
        }
    }

    pub fn from_scope(s: Scope) -> ScopeDoc {
        match s {
            Scope::Global => ScopeDoc::Global,
            Scope::Customer(c) => ScopeDoc::Customer { customer: c },
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SourceActionDoc {
    Drop,
    Allow,
    Monitor,
}

impl SourceActionDoc {
    pub fn action(self) -> SourceAction {
        match self {
            SourceActionDoc::Drop => SourceAction::Drop,
            SourceActionDoc::Allow => SourceAction::Allow,
            SourceActionDoc::Monitor => SourceAction::Monitor,
        }
    }
}

impl LocalEntry {
    pub fn net(&self) -> Net {
        parse_cidr(&self.prefix, true).expect("validated when added")
    }
}

/// One NOC rule with its provenance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LocalRule {
    pub customer: u32,
    pub rule: crate::policy::rules_doc::RuleDoc,
    pub who: String,
    #[serde(with = "time::serde::rfc3339")]
    pub added: OffsetDateTime,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalFile {
    pub entries: Vec<LocalEntry>,
    #[serde(default)]
    pub rules: Vec<LocalRule>,
}

/// Paths of the state directory.
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        fs::create_dir_all(dir)
            .map_err(|e| state_err(dir, format!("cannot create the state directory: {e}")))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn central_path(&self) -> PathBuf {
        self.dir.join("central.json")
    }

    pub fn local_path(&self) -> PathBuf {
        self.dir.join("local.json")
    }

    pub fn ids_path(&self) -> PathBuf {
        self.dir.join("ids.log")
    }

    pub fn links_path(&self) -> PathBuf {
        self.dir.join("links.json")
    }

    /// The central layer, validated again (a file edited by hand gets the same checks as a
    /// push).
    pub fn load_central(
        &self,
        cap: &Capacity,
    ) -> Result<Option<(CentralMeta, Policy)>, StateError> {
        let path = self.central_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state_err(&path, format!("cannot read: {e}"))),
        };
        let file: CentralIn = serde_json::from_slice(&bytes)
            .map_err(|e| state_err(&path, format!("not a central state file: {e}")))?;
        let policy = validate(&file.policy, cap)
            .map_err(|e| state_err(&path, format!("the policy in it is invalid: {e}")))?;
        Ok(Some((file.meta, policy)))
    }

    pub fn save_central(&self, meta: &CentralMeta, doc: &PolicyDoc) -> Result<(), StateError> {
        let path = self.central_path();
        let bytes = serde_json::to_vec(&CentralOut { meta, policy: doc })
            .map_err(|e| state_err(&path, e.to_string()))?;
        atomic_write(&path, &bytes).map_err(|e| state_err(&path, format!("cannot write: {e}")))
    }

    pub fn load_local(&self) -> Result<LocalFile, StateError> {
        let path = self.local_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalFile::default()),
            Err(e) => return Err(state_err(&path, format!("cannot read: {e}"))),
        };
        let file: LocalFile = serde_json::from_slice(&bytes)
            .map_err(|e| state_err(&path, format!("not a local layer file: {e}")))?;
        for (i, e) in file.entries.iter().enumerate() {
            parse_cidr(&e.prefix, true)
                .map_err(|m| state_err(&path, format!("entries[{i}].prefix: {m}")))?;
        }
        Ok(file)
    }

    pub fn save_local(&self, l: &LocalFile) -> Result<(), StateError> {
        let path = self.local_path();
        let bytes = serde_json::to_vec_pretty(l).map_err(|e| state_err(&path, e.to_string()))?;
        atomic_write(&path, &bytes).map_err(|e| state_err(&path, format!("cannot write: {e}")))
    }

    pub fn load_links(&self) -> HashMap<String, String> {
        fs::read(self.links_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_links(&self, modes: &HashMap<String, String>) {
        if let Ok(b) = serde_json::to_vec(modes) {
            let _ = atomic_write(&self.links_path(), &b);
        }
    }
}

/// One line of the id log.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IdLine {
    /// Customer got a slot.
    Slot(u32, u32),
    /// Customer's slot released.
    Unslot(u32, u32),
    /// Entry (scope, layer, prefix) got an id.
    Id(u32, String, String, String),
    /// Id released.
    Free(u32),
    /// Rule (customer, layer, rule id) or limit (customer, "limit", 0) got a counter index.
    Stat(u32, u32, String, u32),
    /// Counter index released.
    Freestat(u32),
}

#[cfg(test)]
fn scope_str(s: Scope) -> String {
    match s {
        Scope::Global => "global".into(),
        Scope::Customer(c) => format!("customer:{c}"),
    }
}

fn parse_scope(s: &str) -> Option<Scope> {
    if s == "global" {
        return Some(Scope::Global);
    }
    s.strip_prefix("customer:")?
        .parse()
        .ok()
        .map(Scope::Customer)
}

fn parse_layer(s: &str) -> Option<Layer> {
    match s {
        "central" => Some(Layer::Central),
        "local" => Some(Layer::Local),
        _ => None,
    }
}

/// Append-only record of slot and hit-counter id assignments, so a restarted agent keeps
/// every counter with its customer and entry. Compacted when it grows well past the live
/// table.
pub struct IdLog {
    path: PathBuf,
    file: File,
    lines: usize,
}

impl IdLog {
    /// Opens (creating) the log and replays it.
    pub fn open(path: &Path) -> Result<(IdLog, IdTable), StateError> {
        let mut slots: HashMap<u32, u32> = HashMap::new();
        let mut ids: HashMap<u32, EntryKey> = HashMap::new();
        let mut stats: HashMap<u32, StatKey> = HashMap::new();
        let mut lines = 0;
        if let Ok(f) = File::open(path) {
            let mut reader = BufReader::new(f);
            let mut buf = String::new();
            let mut n = 0;
            loop {
                buf.clear();
                let read = reader
                    .read_line(&mut buf)
                    .map_err(|e| state_err(path, format!("cannot read: {e}")))?;
                if read == 0 {
                    break;
                }
                n += 1;
                if !buf.ends_with('\n') {
                    // A line cut by a crash was never acknowledged: ignore it.
                    log::warn!("{}: ignoring an unfinished last line {n}", path.display());
                    break;
                }
                let line: IdLine = serde_json::from_str(buf.trim_end())
                    .map_err(|e| state_err(path, format!("line {n}: {e}")))?;
                match line {
                    IdLine::Slot(c, s) => {
                        slots.insert(c, s);
                    }
                    IdLine::Unslot(c, _) => {
                        slots.remove(&c);
                    }
                    IdLine::Id(id, scope, layer, prefix) => {
                        let key = (|| {
                            Some(EntryKey {
                                scope: parse_scope(&scope)?,
                                layer: parse_layer(&layer)?,
                                net: parse_cidr(&prefix, true).ok()?,
                            })
                        })()
                        .ok_or_else(|| {
                            state_err(
                                path,
                                format!("line {n}: bad entry {scope} {layer} {prefix}"),
                            )
                        })?;
                        ids.insert(id, key);
                    }
                    IdLine::Free(id) => {
                        ids.remove(&id);
                    }
                    IdLine::Stat(id, customer, kind, rule) => {
                        let kind = match kind.as_str() {
                            "limit" => StatKind::Limit,
                            other => StatKind::Rule {
                                layer: parse_layer(other).ok_or_else(|| {
                                    state_err(path, format!("line {n}: bad rule layer {other:?}"))
                                })?,
                                id: rule,
                            },
                        };
                        stats.insert(id, StatKey { customer, kind });
                    }
                    IdLine::Freestat(id) => {
                        stats.remove(&id);
                    }
                }
                lines += 1;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| state_err(path, format!("cannot open for appending: {e}")))?;
        let mut table = IdTable {
            slots: slots.into_iter().collect(),
            entries: ids.into_iter().map(|(id, k)| (k, id)).collect(),
            stats: stats.into_iter().map(|(id, k)| (k, id)).collect(),
        };
        table.slots.sort_unstable();
        table.entries.sort_unstable_by_key(|(_, id)| *id);
        table.stats.sort_unstable_by_key(|(_, id)| *id);
        Ok((
            IdLog {
                path: path.to_path_buf(),
                file,
                lines,
            },
            table,
        ))
    }

    fn encode(j: &Journal) -> String {
        let mut out = String::with_capacity(64 * j.assigned_ids.len());
        let push = |out: &mut String, l: IdLine| {
            out.push_str(&serde_json::to_string(&l).expect("id line"));
            out.push('\n');
        };
        for (c, s) in &j.assigned_slots {
            push(&mut out, IdLine::Slot(*c, *s));
        }
        // The bulk of a large push: written directly, in exactly the form serde gives
        // `IdLine::Id` (see the test), without four allocations per line.
        for (k, id) in &j.assigned_ids {
            use std::fmt::Write as _;
            let _ = write!(out, "{{\"id\":[{id},\"");
            let _ = match k.scope {
                Scope::Global => write!(out, "global"),
                Scope::Customer(c) => write!(out, "customer:{c}"),
            };
            let _ = write!(out, "\",\"{}\",\"", k.layer.name());
            let _ = if k.net.v6 {
                write!(out, "{}", std::net::Ipv6Addr::from(k.net.addr))
            } else {
                write!(out, "{}", std::net::Ipv4Addr::from(k.net.addr as u32))
            };
            let _ = writeln!(out, "/{}\"]}}", k.net.len);
        }
        for (k, id) in &j.assigned_stats {
            let (kind, rule) = match k.kind {
                StatKind::Limit => ("limit".to_string(), 0),
                StatKind::Rule { layer, id } => (layer.name().to_string(), id),
            };
            push(&mut out, IdLine::Stat(*id, k.customer, kind, rule));
        }
        for (c, s) in &j.released_slots {
            push(&mut out, IdLine::Unslot(*c, *s));
        }
        for id in &j.released_ids {
            push(&mut out, IdLine::Free(*id));
        }
        for id in &j.released_stats {
            push(&mut out, IdLine::Freestat(*id));
        }
        out
    }

    /// Appends a journal and makes it durable.
    pub fn record(&mut self, j: &Journal) -> Result<(), String> {
        let text = Self::encode(j);
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.lines += text.lines().count();
        Ok(())
    }

    /// Whether the log has grown past `4 * live + 1024` lines for `live` assignments.
    pub fn needs_compaction(&self, live: usize) -> bool {
        self.lines > 4 * live + 1024
    }

    /// Rewrites the log as just the live table, when it has grown past `4 * live + 1024`
    /// lines.
    pub fn maybe_compact(&mut self, table: &IdTable) -> Result<(), String> {
        let live = table.slots.len() + table.entries.len() + table.stats.len();
        if !self.needs_compaction(live) {
            return Ok(());
        }
        let j = Journal {
            assigned_slots: table.slots.clone(),
            assigned_ids: table.entries.clone(),
            assigned_stats: table.stats.clone(),
            ..Journal::default()
        };
        let text = Self::encode(&j);
        atomic_write(&self.path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.lines = live;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mssp-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn id_lines_are_written_as_serde_writes_them() {
        for (scope, layer, net) in [
            (Scope::Customer(7), Layer::Central, "198.18.66.0/24"),
            (Scope::Global, Layer::Local, "2001:db8::/32"),
            (Scope::Customer(u32::MAX), Layer::Local, "198.18.0.1/32"),
        ] {
            let k = EntryKey {
                scope,
                layer,
                net: parse_cidr(net, false).unwrap(),
            };
            let j = Journal {
                assigned_ids: vec![(k, 42)],
                ..Journal::default()
            };
            let serde = serde_json::to_string(&IdLine::Id(
                42,
                scope_str(scope),
                layer.name().into(),
                crate::policy::cidr::format_net(&k.net),
            ))
            .unwrap();
            assert_eq!(IdLog::encode(&j), format!("{serde}\n"));
        }
    }

    #[test]
    fn id_log_replays_and_compacts() {
        let d = tmpdir("ids");
        let path = d.join("ids.log");
        let key = |p: &str, layer| EntryKey {
            scope: Scope::Customer(7),
            layer,
            net: parse_cidr(p, false).unwrap(),
        };
        {
            let (mut log, t) = IdLog::open(&path).unwrap();
            assert_eq!(t, IdTable::default());
            log.record(&Journal {
                assigned_slots: vec![(7, 1), (8, 2)],
                assigned_ids: vec![
                    (key("198.18.0.0/24", Layer::Central), 1),
                    (key("198.18.1.0/24", Layer::Local), 2),
                ],
                ..Journal::default()
            })
            .unwrap();
            log.record(&Journal {
                released_slots: vec![(8, 2)],
                released_ids: vec![1],
                ..Journal::default()
            })
            .unwrap();
        }
        // A crash in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":[9,\"glo").unwrap();
        let (mut log, t) = IdLog::open(&path).unwrap();
        assert_eq!(t.slots, vec![(7, 1)]);
        assert_eq!(t.entries, vec![(key("198.18.1.0/24", Layer::Local), 2)]);
        log.lines = 10_000;
        log.maybe_compact(&t).unwrap();
        let (_, t2) = IdLog::open(&path).unwrap();
        assert_eq!(t2, t);
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn corrupt_files_are_named() {
        let d = tmpdir("corrupt");
        let s = Store::open(&d).unwrap();
        fs::write(s.central_path(), b"{not json").unwrap();
        let e = s.load_central(&Capacity::default()).unwrap_err();
        assert!(e.to_string().contains("central.json"), "{e}");
        fs::write(s.local_path(), br#"{"entries":[{"scope":"global","prefix":"198.18.0.1/24","action":"drop","who":"x","added":"2026-01-01T00:00:00Z"}]}"#).unwrap();
        let e = s.load_local().unwrap_err();
        assert!(
            e.to_string().contains("local.json") && e.to_string().contains("host bits"),
            "{e}"
        );
        fs::write(s.ids_path(), b"{\"slot\":[1,2]}\ngarbage\n").unwrap();
        let e = IdLog::open(&s.ids_path()).err().unwrap();
        assert!(
            e.to_string().contains("ids.log") && e.to_string().contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn scope_doc_round_trips() {
        let g = serde_json::to_string(&ScopeDoc::Global).unwrap();
        assert_eq!(g, "\"global\"");
        let c = serde_json::to_string(&ScopeDoc::Customer { customer: 7 }).unwrap();
        assert_eq!(c, "{\"customer\":7}");
        assert_eq!(
            serde_json::from_str::<ScopeDoc>(&c).unwrap(),
            ScopeDoc::Customer { customer: 7 }
        );
        assert_eq!(
            serde_json::from_str::<ScopeDoc>(&g).unwrap(),
            ScopeDoc::Global
        );
    }
}
