//! `mssp unpin --pin-dir DIR`: remove everything the agent pinned.

use std::{path::Path, process::ExitCode};

pub fn run(pin_dir: &Path) -> ExitCode {
    match mssp_core::pins::remove_all(pin_dir) {
        Ok(removed) => {
            println!(
                "removed {} pins under {}; filtering has stopped",
                removed.len(),
                pin_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mssp unpin: {}: {e}", pin_dir.display());
            ExitCode::FAILURE
        }
    }
}
