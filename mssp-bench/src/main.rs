//! `mssp-bench` (run by `cargo xtask bench`): mssp against its floor and against what an ISP
//! would otherwise use, plus control-plane figures.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use mssp_bench::{
    run::{BenchOpts, run},
    variants::Throughput,
};

#[derive(Parser)]
#[command(
    name = "mssp-bench",
    about = "mssp benchmarks (run by `cargo xtask bench`)"
)]
struct Args {
    /// A shorter run (about eight minutes: 3 rounds x 2 s per variant, every traffic mix).
    #[arg(long)]
    quick: bool,
    /// Where the summary goes.
    #[arg(long, default_value = "target/bench/summary.json")]
    out: PathBuf,
    /// Only these variants (development).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these traffic mixes.
    #[arg(long, value_delimiter = ',')]
    mixes: Vec<String>,
    #[arg(long)]
    rounds: Option<usize>,
    #[arg(long)]
    secs: Option<f64>,
    #[arg(long)]
    skip_control: bool,
    /// How throughput is measured: `pinned` (the generator on CPU 0, the receiving veth's
    /// threaded NAPI and the program on CPU 1) or `shared` (the older method: generator
    /// threads on both CPUs, the program wherever NAPI runs).
    #[arg(long, value_enum, default_value = "pinned")]
    throughput: Throughput,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let opts = BenchOpts {
        quick: a.quick,
        out: a.out,
        only: a.only,
        mixes: a.mixes,
        rounds: a.rounds,
        secs: a.secs,
        skip_control: a.skip_control,
        throughput: a.throughput,
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mssp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
