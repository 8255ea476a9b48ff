//! The attack history in the state directory: `attacks.json` (every active attack and the
//! last ended ones, replaced atomically: what a restarted agent resumes, mitigations
//! included) and `attacks.log` (one JSON line per event, appended: what a customer's attack
//! report is built from).

use std::{
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use mssp_wire::attacks::{Attack, AttackEvent};
use serde::{Deserialize, Serialize};

use crate::store::{StateError, atomic_write, state_err};

#[derive(Serialize, Deserialize)]
struct AttacksFile {
    attacks: Vec<Attack>,
}

pub struct AttackStore {
    json: PathBuf,
    log: PathBuf,
}

impl AttackStore {
    pub fn new(state_dir: &Path) -> AttackStore {
        AttackStore {
            json: state_dir.join("attacks.json"),
            log: state_dir.join("attacks.log"),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn load(&self) -> Result<Vec<Attack>, StateError> {
        let bytes = match fs::read(&self.json) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(state_err(&self.json, format!("cannot read: {e}"))),
        };
        let f: AttacksFile = serde_json::from_slice(&bytes)
            .map_err(|e| state_err(&self.json, format!("not an attacks file: {e}")))?;
        Ok(f.attacks)
    }

    pub fn save(&self, attacks: &[Attack]) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(&AttacksFile {
            attacks: attacks.to_vec(),
        })
        .map_err(|e| state_err(&self.json, e.to_string()))?;
        atomic_write(&self.json, &bytes)
            .map_err(|e| state_err(&self.json, format!("cannot write: {e}")))
    }

    pub fn append(&self, events: &[AttackEvent]) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        for e in events {
            serde_json::to_writer(&mut out, e).map_err(|e| state_err(&self.log, e.to_string()))?;
            out.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| state_err(&self.log, format!("cannot open: {e}")))?;
        f.write_all(&out)
            .and_then(|()| f.sync_data())
            .map_err(|e| state_err(&self.log, format!("cannot append: {e}")))
    }
}
