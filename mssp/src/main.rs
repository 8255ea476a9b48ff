//! `mssp`: the edge agent, the NOC's CLI, and the controller's push client. This file only
//! wires: parse the command line, run the verb, exit with its code.

mod cli;
mod client;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
