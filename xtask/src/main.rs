//! `cargo xtask`: everything that needs more than `cargo build` — installing the toolchain
//! pieces (setup), running every test (test), the demo topology (demo), benchmarks (bench)
//! and installing on a router (install). Independent of the mssp crates that build eBPF
//! (it uses only mssp-lab), so it builds before bpf-linker exists.

mod deb;
mod demo;
mod install;
mod layout;
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
    /// Benchmarks: mssp against its floor, a kernel LPM trie and nftables, in rounds; writes
    /// target/bench/summary.json. Then the IPS's timing over floods (detection time, time to
    /// 95% dropped): target/bench/detection.json.
    Bench {
        /// A shorter run (about eight minutes: 3 rounds x 2 s, every traffic mix).
        #[arg(long)]
        quick: bool,
        /// Floods for the IPS timing (about 10 s each; 0 skips it).
        #[arg(long, default_value_t = 20)]
        detection_runs: u32,
        /// Fleet sizes for the fleet section (simulated edges; empty skips it).
        #[arg(long, default_value = "1000,10000")]
        fleet_edges: String,
        /// One section only: main, detection, fleet or filtering.
        #[arg(long)]
        only: Option<String>,
    },
    /// A Debian package (target/debian/mssp_VERSION-1_ARCH.deb): the binary, the unit, a
    /// default config, sysusers.d and tmpfiles.d entries, the man page and completions.
    Deb,
    /// The module graph of every crate, checked for import cycles.
    Layout {
        /// Another workspace to check (default: this one).
        root: Option<std::path::PathBuf>,
    },
    /// Install the binary, the systemd unit and a commented default config.
    Install {
        /// Staging root (packaging); the files land under it.
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
        #[arg(long, default_value = "/usr/local")]
        prefix: String,
    },
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
        Command::Bench {
            quick,
            detection_runs,
            fleet_edges,
            only,
        } => {
            let section = |name: &str| only.as_deref().is_none_or(|o| o == name);
            if let Some(o) = &only {
                anyhow::ensure!(
                    ["main", "detection", "fleet", "filtering"].contains(&o.as_str()),
                    "--only {o:?}: give main, detection, fleet or filtering"
                );
            }
            setup::setup()?;
            util::require_root("the benchmarks attach XDP programs in network namespaces")?;
            util::cargo(&["build", "--release", "-p", "mssp", "-p", "mssp-bench"])?;
            if section("main") {
                let out = util::workspace_root().join("target/bench/summary.json");
                let mut c = util::command(
                    &util::workspace_root()
                        .join("target/release/mssp-bench")
                        .display()
                        .to_string(),
                );
                c.arg("--out").arg(&out);
                if quick {
                    c.arg("--quick");
                }
                util::run(&mut c)?;
            }
            if section("fleet") && !fleet_edges.trim().is_empty() {
                bench_suite(
                    "fleet_bench",
                    Some(("MSSP_BENCH_FLEET_EDGES", fleet_edges.clone())),
                )?;
            }
            if section("filtering") {
                bench_suite("filtering_bench", None)?;
            }
            if section("detection") && detection_runs > 0 {
                bench_suite(
                    "ips_bench",
                    Some(("MSSP_BENCH_DETECTION_RUNS", detection_runs.to_string())),
                )?;
            }
            Ok(())
        }
        Command::Deb => {
            setup::setup()?;
            deb::deb().map(|_| ())
        }
        Command::Layout { root } => layout::check(&root.unwrap_or_else(util::workspace_root), true),
        Command::Install { root, prefix } => {
            setup::setup()?;
            install::install(&root, &prefix)
        }
    }
}

/// A benchmark kept as an ignored test of mssp-tests, run with its output shown.
fn bench_suite(test: &str, env: Option<(&str, String)>) -> Result<()> {
    let mut c = util::command("cargo");
    c.args([
        "test",
        "--release",
        "-p",
        "mssp-tests",
        "--test",
        test,
        "--",
        "--ignored",
        "--nocapture",
    ]);
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    util::run(&mut c)
}

fn test(args: &[String]) -> Result<()> {
    util::require_root("the kernel tests load XDP programs and create network namespaces")?;
    layout::check(&util::workspace_root(), false)?;
    util::sweep_stale();
    util::cargo(&["build", "--release"])?;
    // Every crate's tests, the kernel tests (out of the default members) included.
    let mut a = vec![
        "test",
        "--release",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "mssp-ebpf",
        "--exclude",
        "mssp-bench-ebpf",
    ];
    a.extend(args.iter().map(String::as_str));
    let r = util::cargo(&a)
        .and_then(|()| install_check())
        .and_then(|()| deb::check());
    util::sweep_stale();
    r
}

/// `cargo xtask install` into a staging root, and the installed unit verified.
fn install_check() -> Result<()> {
    let root = std::env::temp_dir().join(format!("mssp-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    install::install(&root, "/usr/local")?;
    for f in [
        "usr/local/bin/mssp",
        "etc/systemd/system/mssp.service",
        "etc/systemd/system/mssp-controller.service",
        "etc/mssp/mssp.toml",
        "etc/mssp/controller.toml.example",
        "usr/local/share/doc/mssp/nats-server.conf",
        "usr/local/share/doc/mssp/README.md",
    ] {
        anyhow::ensure!(root.join(f).exists(), "install did not create {f}");
    }
    // The installed units name /usr/local/bin/mssp; verify them against the staged binary.
    for name in ["mssp.service", "mssp-controller.service"] {
        let unit = std::fs::read_to_string(root.join("etc/systemd/system").join(name))?.replace(
            "/usr/local/bin/mssp",
            &root.join("usr/local/bin/mssp").display().to_string(),
        );
        let staged = root.join(name);
        std::fs::write(&staged, unit)?;
        util::run(
            std::process::Command::new("systemd-analyze")
                .arg("verify")
                .arg(&staged),
        )?;
    }
    let _ = std::fs::remove_dir_all(&root);
    println!("xtask: install into a staging root and systemd-analyze verify: ok");
    Ok(())
}
