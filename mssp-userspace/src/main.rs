//! `mssp`: the edge agent, the NOC's CLI, and the controller's push client.

use std::process::ExitCode;

fn main() -> ExitCode {
    mssp::cli::main()
}
