//! Printing: tables for people, JSON for scripts, and errors in either form.

use std::process::ExitCode;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::client::ClientError;

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

pub fn json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints a failed call: `mssp: ...` on stderr, or with `--json` an `{"error", "exit"}`
/// object on stdout (and the API's details, where it gave any), then the exit code.
pub fn fail(e: &ClientError, as_json: bool) -> ExitCode {
    let code = e.exit_code();
    if as_json {
        let mut v = match e {
            ClientError::Api { body, .. } => serde_json::to_value(body).unwrap_or_default(),
            other => serde_json::json!({"error": other.to_string()}),
        };
        v["exit"] = code.into();
        println!("{v}");
    } else {
        eprintln!("mssp: {e}");
    }
    ExitCode::from(code)
}

/// Prints the reply with `show` (or as JSON), or the error.
pub fn report<T: Serialize>(
    r: Result<T, ClientError>,
    as_json: bool,
    show: impl FnOnce(&T),
) -> ExitCode {
    match r {
        Ok(v) => {
            if as_json {
                json(&v);
            } else {
                show(&v);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, as_json),
    }
}
