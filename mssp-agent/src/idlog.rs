//! The id log: an append-only record of slot and hit-counter id assignments, so a restarted
//! agent keeps every counter with its customer and entry. Compacted when it grows well past
//! the live table.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use mssp_common::{Layer, Scope};
use mssp_core::{
    dataplane::{EntryKey, IdTable, Journal, StatKey, StatKind},
    policy::cidr::{parse_cidr, push_net},
};
use serde::{Deserialize, Serialize};

use crate::store::{StateError, atomic_write, state_err};

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
    Layer::from_name(s)
}

/// Lines on their way to a file, in chunks of about a MiB.
struct Lines<'a> {
    sink: &'a mut dyn Write,
    buf: Vec<u8>,
    bytes: u64,
    lines: usize,
}

impl<'a> Lines<'a> {
    const CHUNK: usize = 1 << 20;

    fn new(sink: &'a mut dyn Write) -> Lines<'a> {
        Lines {
            sink,
            buf: Vec::with_capacity(Self::CHUNK + 4096),
            bytes: 0,
            lines: 0,
        }
    }

    fn end_line(&mut self) -> std::io::Result<()> {
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Append-only record of slot and hit-counter id assignments, so a restarted agent keeps
/// every counter with its customer and entry. Compacted when it grows well past the live
/// table.
pub struct IdLog {
    path: PathBuf,
    file: File,
    lines: usize,
    /// Bytes of whole records: the file is cut back to this after a write that failed half
    /// way, so the next append never lands behind a torn line.
    len: u64,
}

impl IdLog {
    /// Opens (creating) the log and replays it.
    pub fn open(path: &Path) -> Result<(IdLog, IdTable), StateError> {
        let mut slots: HashMap<u32, u32> = HashMap::new();
        let mut ids: HashMap<u32, EntryKey> = HashMap::new();
        let mut stats: HashMap<u32, StatKey> = HashMap::new();
        let mut lines = 0;
        let mut good: u64 = 0;
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
                    // A line cut by a crash (or a full disk) was never acknowledged: it is
                    // cut off below, so the next record starts on a line of its own.
                    log::warn!(
                        "{}: dropping an unfinished last line {n} ({read} bytes)",
                        path.display()
                    );
                    break;
                }
                good += read as u64;
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
        let size = file
            .metadata()
            .map_err(|e| state_err(path, format!("cannot stat: {e}")))?
            .len();
        if size > good {
            file.set_len(good)
                .and_then(|()| file.sync_data())
                .map_err(|e| state_err(path, format!("cannot cut off the torn last line: {e}")))?;
        }
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
                len: good,
            },
            table,
        ))
    }

    /// Writes `j` as log lines to `w`, a chunk at a time (a million lines are ~60 MiB).
    fn write(j: &Journal, w: &mut Lines<'_>) -> std::io::Result<()> {
        let push = |w: &mut Lines<'_>, l: IdLine| {
            serde_json::to_writer(&mut w.buf, &l).expect("id line");
            w.end_line()
        };
        for (c, s) in &j.assigned_slots {
            push(w, IdLine::Slot(*c, *s))?;
        }
        // The bulk of a large push: written directly, in exactly the form serde gives
        // `IdLine::Id` (see the test), without allocating per line.
        for (k, id) in &j.assigned_ids {
            let mut num = itoa::Buffer::new();
            let b = &mut w.buf;
            b.extend_from_slice(b"{\"id\":[");
            b.extend_from_slice(num.format(*id).as_bytes());
            match k.scope {
                Scope::Global => b.extend_from_slice(b",\"global\",\""),
                Scope::Customer(c) => {
                    b.extend_from_slice(b",\"customer:");
                    b.extend_from_slice(num.format(c).as_bytes());
                    b.extend_from_slice(b"\",\"");
                }
            }
            b.extend_from_slice(k.layer.name().as_bytes());
            b.extend_from_slice(b"\",\"");
            push_net(b, &k.net);
            b.extend_from_slice(b"\"]}");
            w.end_line()?;
        }
        for (k, id) in &j.assigned_stats {
            let (kind, rule) = match k.kind {
                StatKind::Limit => ("limit".to_string(), 0),
                StatKind::Rule { layer, id } => (layer.name().to_string(), id),
            };
            push(w, IdLine::Stat(*id, k.customer, kind, rule))?;
        }
        for (c, s) in &j.released_slots {
            push(w, IdLine::Unslot(*c, *s))?;
        }
        for id in &j.released_ids {
            push(w, IdLine::Free(*id))?;
        }
        for id in &j.released_stats {
            push(w, IdLine::Freestat(*id))?;
        }
        w.flush()
    }

    /// `j` as the log's text.
    fn encode(j: &Journal) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Lines::new(&mut out);
        Self::write(j, &mut w).expect("writing to memory");
        drop(w);
        out
    }

    /// Appends a journal and makes it durable. A write that fails half way (a full disk)
    /// is cut off again, so the log stays a sequence of whole records.
    pub fn record(&mut self, j: &Journal) -> Result<(), String> {
        let t = std::time::Instant::now();
        let mut w = Lines::new(&mut self.file);
        let written = Self::write(j, &mut w);
        let (bytes, lines) = (w.bytes, w.lines);
        let t1 = t.elapsed();
        let written = written.and_then(|()| self.file.sync_data());
        log::debug!(
            "id log: {lines} lines written in {t1:?}, durable at {:?}",
            t.elapsed()
        );
        if let Err(e) = written {
            if let Err(e2) = self.file.set_len(self.len) {
                log::error!(
                    "{}: cannot cut off a failed append ({e2}); the next start drops it",
                    self.path.display()
                );
            }
            return Err(format!("{}: {e}", self.path.display()));
        }
        self.len += bytes;
        self.lines += lines;
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
        atomic_write(&self.path, &text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.lines = live;
        self.len = text.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mssp-idlog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
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
                scope.label().to_string(),
                layer.name().into(),
                mssp_core::policy::cidr::format_net(&k.net),
            ))
            .unwrap();
            assert_eq!(
                String::from_utf8(IdLog::encode(&j)).unwrap(),
                format!("{serde}\n")
            );
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
        // Regression: an append after the torn line made the next open fail.
        {
            let (mut log, _) = IdLog::open(&path).unwrap();
            log.record(&Journal {
                assigned_slots: vec![(9, 3)],
                ..Journal::default()
            })
            .unwrap();
        }
        let (_, t) = IdLog::open(&path).expect("the log survives a torn line and a later append");
        assert!(t.slots.contains(&(9, 3)), "{t:?}");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"unslot\":[9,3]}\n").unwrap();
        let (mut log, t) = IdLog::open(&path).unwrap();
        assert_eq!(t.slots, vec![(7, 1)]);
        assert_eq!(t.entries, vec![(key("198.18.1.0/24", Layer::Local), 2)]);
        log.lines = 10_000;
        log.maybe_compact(&t).unwrap();
        let (_, t2) = IdLog::open(&path).unwrap();
        assert_eq!(t2, t);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }
}
