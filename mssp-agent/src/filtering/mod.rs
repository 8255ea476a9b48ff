//! Content filtering, the agent's part: the table the inspector enforces (central lists and
//! the NOC's local names, merged), written to the state directory whenever it changes; the
//! inspector process, started and restarted; and what it reports.

pub mod supervisor;

use std::{collections::BTreeSet, path::Path};

use mssp_core::policy::{Policy, filtering::Filtering};
use mssp_filter::{
    inspector::{REPORT_FILE, TABLE_FILE},
    stats::Report,
    table::{CustomerDoc, TableDoc},
};

use crate::store::LocalFile;

/// One list: the central one with the local names added (local names alone use the
/// defaults: NXDOMAIN, QUIC passes).
fn merged(central: Option<&Filtering>, local: &[&str]) -> Option<Filtering> {
    if central.is_none() && local.is_empty() {
        return None;
    }
    let mut f = central.cloned().unwrap_or_default();
    if !local.is_empty() {
        let mut all: BTreeSet<String> = f.block_domains.drain(..).collect();
        all.extend(local.iter().map(|s| s.to_string()));
        f.block_domains = all.into_iter().collect();
    }
    Some(f)
}

/// What the inspector should enforce (`generation` 0: the caller numbers it).
pub fn table_doc(policy: &Policy, local: &LocalFile) -> TableDoc {
    let names_of = |c: Option<u32>| -> Vec<&str> {
        local
            .filter_names
            .iter()
            .filter(|n| n.customer == c)
            .map(|n| n.name.as_str())
            .collect()
    };
    TableDoc {
        generation: 0,
        global: merged(policy.global_filtering.as_ref(), &names_of(None)),
        customers: policy
            .customers
            .iter()
            .map(|c| {
                let local_names = names_of(Some(c.id));
                CustomerDoc {
                    id: c.id,
                    name: c.name.clone(),
                    prefixes: c
                        .prefixes
                        .iter()
                        .map(mssp_core::policy::cidr::format_net)
                        .collect(),
                    filtering: merged(c.filtering.as_ref(), &local_names),
                    local_names: local_names.iter().map(|s| s.to_string()).collect(),
                }
            })
            .collect(),
    }
}

/// Writes the table if it differs from `last` (atomically: the inspector never reads half
/// a file). Returns the table now on disk.
pub fn write_table(
    dir: &Path,
    mut doc: TableDoc,
    last: Option<&TableDoc>,
) -> std::io::Result<TableDoc> {
    if let Some(l) = last {
        doc.generation = l.generation;
        if *l == doc {
            return Ok(doc);
        }
    }
    doc.generation = last.map_or(1, |l| l.generation + 1).max(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let path = dir.join(TABLE_FILE);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&doc).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    Ok(doc)
}

/// The inspector's last report, if it wrote one.
pub fn read_report(dir: &Path) -> Option<Report> {
    let b = std::fs::read(dir.join(REPORT_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}
