//! `mssp unpin --pin-dir DIR [--force]`: remove everything the agent pinned.

use std::{path::Path, process::ExitCode};

use mssp_wire::exit;

pub fn run(pin_dir: &Path, force: bool) -> ExitCode {
    let holder = mssp_core::pins::locked_by(pin_dir);
    if let Some(pid) = holder
        && !force
    {
        eprintln!(
            "mssp unpin: an agent{} is running with the pins in {}: removing them would not stop \
             its filter (it holds the program and links open) but would leave nothing to adopt \
             after it stops. Stop it first (`systemctl stop mssp`), then unpin; --force removes \
             the pins anyway",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            pin_dir.display()
        );
        return ExitCode::from(exit::TEMPFAIL);
    }
    match mssp_core::pins::remove_all(pin_dir) {
        Ok(removed) => {
            match holder {
                Some(pid) => println!(
                    "removed {} pins under {}; the running agent{} keeps filtering until it stops, \
                     and then filtering stops",
                    removed.len(),
                    pin_dir.display(),
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                ),
                None => println!(
                    "removed {} pins under {}; filtering has stopped",
                    removed.len(),
                    pin_dir.display()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mssp unpin: {}: {e}", pin_dir.display());
            ExitCode::FAILURE
        }
    }
}
