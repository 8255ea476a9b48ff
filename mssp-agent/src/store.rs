//! The agent's state directory: the central layer (last applied push), the local layer (the
//! NOC's CLI entries with provenance) and the id log. Files are replaced atomically (temp
//! file, fsync, rename, fsync of the directory); the id log is appended and fsynced.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use mssp_common::{Net, Scope, abi::SourceAction};
use mssp_core::policy::{
    Capacity, Policy, PolicyDoc, cidr::parse_cidr, rules_doc::RuleDoc, validate_owned,
};
use mssp_wire::Provenance;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A state file that cannot be read: the agent stops (the pinned filter keeps running).
#[derive(Debug, thiserror::Error)]
#[error("state file {file}: {message}; fix or remove it (the running filter is untouched)")]
pub struct StateError {
    pub file: String,
    pub message: String,
}

pub(crate) fn state_err(path: &Path, message: impl Into<String>) -> StateError {
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
    pub scope: Scope,
    pub prefix: String,
    pub action: SourceAction,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who added it and when.
    #[serde(flatten)]
    pub by: Provenance,
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
    pub rule: RuleDoc,
    #[serde(flatten)]
    pub by: Provenance,
}

/// local.json: the NOC's layer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalFile {
    /// Bumped by every change, so a dashboard can tell that the local layer changed.
    #[serde(default)]
    pub version: u64,
    pub entries: Vec<LocalEntry>,
    #[serde(default)]
    pub rules: Vec<LocalRule>,
    /// The NOC's detection settings: over the central policy's for the same customer (or
    /// the default).
    #[serde(default, skip_serializing_if = "LocalDetection::is_empty")]
    pub detection: LocalDetection,
    /// Names the NOC blocks on this edge (`mssp filter add`), over the central lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_names: Vec<LocalFilterName>,
}

/// A name the NOC blocks (for one customer, or for every customer with `customer` unset).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LocalFilterName {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<u32>,
    pub name: String,
    #[serde(flatten)]
    pub by: Provenance,
}

/// Detection settings set by the CLI (`mssp detection set`), with provenance.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<LocalDetectionDoc>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub customers: std::collections::BTreeMap<u32, LocalDetectionDoc>,
}

impl LocalDetection {
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.customers.is_empty()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LocalDetectionDoc {
    pub detection: mssp_core::policy::detection::DetectionDoc,
    #[serde(flatten)]
    pub by: Provenance,
}

/// central.json on its way: see [`Store::draft_central`]. Dropped without
/// [`Store::commit_central`] (the policy was not applied), the temporary file goes.
pub struct CentralDraft {
    tmp: PathBuf,
    file: File,
}

impl Drop for CentralDraft {
    fn drop(&mut self) {
        // After a commit the temporary name no longer exists; otherwise it is discarded.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Paths of the state directory.
#[derive(Clone)]
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
        let Some(file) = self.read_central()? else {
            return Ok(None);
        };
        let policy = validate_owned(file.policy, cap).map_err(|e| {
            state_err(
                &self.central_path(),
                format!("the policy in it is invalid: {e}"),
            )
        })?;
        Ok(Some((file.meta, policy)))
    }

    /// The stored central document as written (not validated again): what `policy show
    /// --full` answers once the agent keeps only a slim copy (`Policy::slim_doc`).
    pub fn load_central_doc(&self) -> Result<Option<PolicyDoc>, StateError> {
        Ok(self.read_central()?.map(|f| f.policy))
    }

    fn read_central(&self) -> Result<Option<CentralIn>, StateError> {
        let path = self.central_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(state_err(&path, format!("cannot read: {e}"))),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| state_err(&path, format!("not a central state file: {e}")))
    }

    pub fn save_central(&self, meta: &CentralMeta, doc: &PolicyDoc) -> Result<(), StateError> {
        let path = self.central_path();
        let bytes = serde_json::to_vec(&CentralOut { meta, policy: doc })
            .map_err(|e| state_err(&path, e.to_string()))?;
        atomic_write(&path, &bytes).map_err(|e| state_err(&path, format!("cannot write: {e}")))
    }

    /// Starts central.json from the document's bytes as received (they parsed as the policy
    /// about to be applied): written to a temporary file while the policy is applied, the
    /// metadata appended and the file put in place by [`Store::commit_central`] once it is
    /// enforced. A large document is thus never serialised again, and its ~50 MB are on
    /// their way to the disk on the second core while the first compiles.
    pub fn draft_central(&self, body: &[u8]) -> Result<CentralDraft, StateError> {
        let tmp = self
            .dir
            .join(format!(".central.json.draft-{}", std::process::id()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(b"{\"policy\":")?;
            f.write_all(body)?;
            Ok(f)
        });
        match written {
            Ok(file) => Ok(CentralDraft { tmp, file }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(state_err(&tmp, format!("cannot write: {e}")))
            }
        }
    }

    /// Finishes a draft: the metadata, then durably in place of central.json.
    pub fn commit_central(
        &self,
        mut d: CentralDraft,
        meta: &CentralMeta,
    ) -> Result<(), StateError> {
        let path = self.central_path();
        let meta_json = serde_json::to_vec(meta).map_err(|e| state_err(&path, e.to_string()))?;
        let done = (|| {
            // `{"version":…}` continues the object after the document: `,"version":…}`.
            d.file.write_all(b",")?;
            d.file.write_all(&meta_json[1..])?;
            d.file.sync_all()?;
            fs::rename(&d.tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        done.map_err(|e| {
            let _ = fs::remove_file(&d.tmp);
            state_err(&path, format!("cannot write: {e}"))
        })
    }

    /// Forgets the central layer (an agent back to "no push yet").
    pub fn remove_central(&self) -> Result<(), StateError> {
        let path = self.central_path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(state_err(&path, format!("cannot remove: {e}"))),
        }
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
        let d = &file.detection;
        for (path_of, doc) in d
            .default
            .iter()
            .map(|x| ("detection.default".to_string(), x))
            .chain(
                d.customers
                    .iter()
                    .map(|(c, x)| (format!("detection.customers.{c}"), x)),
            )
        {
            let mut errors = Vec::new();
            if mssp_core::policy::detection::detection(&doc.detection, &path_of, &mut errors)
                .is_none()
            {
                let msg: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                return Err(state_err(&path, msg.join("; ")));
            }
        }
        Ok(file)
    }

    pub fn save_local(&self, l: &LocalFile) -> Result<(), StateError> {
        let path = self.local_path();
        let bytes = serde_json::to_vec_pretty(l).map_err(|e| state_err(&path, e.to_string()))?;
        atomic_write(&path, &bytes).map_err(|e| state_err(&path, format!("cannot write: {e}")))
    }

    /// The fleet layer (decisions as the controller signed them), kept so an edge that
    /// restarts cut off from the broker keeps enforcing them until they expire.
    pub fn load_fleet(&self) -> Result<Vec<mssp_wire::fleet::Decision>, StateError> {
        let path = self.dir.join("fleet.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| state_err(&path, format!("not a fleet layer: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(state_err(&path, format!("cannot read: {e}"))),
        }
    }

    pub fn save_fleet(&self, f: &[mssp_wire::fleet::Decision]) -> Result<(), StateError> {
        let path = self.dir.join("fleet.json");
        let bytes = serde_json::to_vec_pretty(f).map_err(|e| state_err(&path, e.to_string()))?;
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
        let e = crate::idlog::IdLog::open(&s.ids_path()).err().unwrap();
        assert!(
            e.to_string().contains("ids.log") && e.to_string().contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn scope_round_trips_in_the_state_file_form() {
        let g = serde_json::to_string(&Scope::Global).unwrap();
        assert_eq!(g, "\"global\"");
        let c = serde_json::to_string(&Scope::Customer(7)).unwrap();
        assert_eq!(c, "{\"customer\":7}");
        assert_eq!(
            serde_json::from_str::<Scope>(&c).unwrap(),
            Scope::Customer(7)
        );
        assert_eq!(serde_json::from_str::<Scope>(&g).unwrap(), Scope::Global);
    }
}
