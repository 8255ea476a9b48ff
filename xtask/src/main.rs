//! `cargo xtask`: everything that needs more than `cargo build` — installing the toolchain
//! pieces (setup), running every test (test), the demo topology (demo), benchmarks (bench)
//! and installing on a router (install). Deliberately independent of the mssp crates, so it
//! builds before bpf-linker exists.

mod demo;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent): rust-src for nightly, bpf-linker
    /// built against the nightly's LLVM, and the Debian packages the tests use.
    Setup,
    /// Build and run every test: unit, BPF_PROG_TEST_RUN tables, differential, end to end.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build, create a demo topology, filter it with the embedded demo policy, send allowed and
    /// blocked traffic, print per-customer counters, clean up.
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::setup(),
        Command::Test { args } => {
            setup::setup()?;
            test(&args)
        }
        Command::Demo => {
            setup::setup()?;
            demo::demo()
        }
    }
}

fn test(args: &[String]) -> Result<()> {
    util::require_root("the kernel tests load XDP programs and create network namespaces")?;
    util::sweep_stale();
    util::cargo(&["build", "--release"])?;
    let mut a = vec!["test", "--release", "--no-fail-fast"];
    a.extend(args.iter().map(String::as_str));
    let r = util::cargo(&a);
    util::sweep_stale();
    r
}
