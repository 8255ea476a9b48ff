//! `cargo xtask setup`: installs what is missing, idempotently, or says what to do.

use std::{fs, os::unix::fs::symlink, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{command, home, is_root, output, run};

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and tools use, with the command that shows each is there.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("procps", "sysctl"),
    ("util-linux", "mount"),
    ("nftables", "nft"),
    ("libcap2-bin", "capsh"),
    ("systemd", "systemd-analyze"),
    ("ethtool", "ethtool"),
    // trafgen: the attack-detection tests' floods.
    ("netsniff-ng", "trafgen"),
    // The fleet's broker (JetStream); the package's own service is not used by the tests.
    ("nats-server", "nats-server"),
    // Content filtering's real peers: a DNS server, a web server, the clients.
    ("dnsmasq-base", "dnsmasq"),
    ("nginx-light", "nginx"),
    ("bind9-dnsutils", "dig"),
    ("curl", "curl"),
    ("openssl", "openssl"),
];

pub fn setup() -> Result<()> {
    nightly()?;
    rust_src()?;
    bpf_linker()?;
    packages()?;
    Ok(())
}

fn nightly() -> Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is not installed; install it from https://rustup.rs")?;
    if list.lines().any(|l| l.starts_with("nightly")) {
        return Ok(());
    }
    eprintln!("setup: installing the nightly toolchain (the XDP program needs -Z build-std)");
    run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
        .context("installing the nightly toolchain failed; run `rustup toolchain install nightly`")
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"])).context(
        "could not add rust-src; run `rustup component add rust-src --toolchain nightly` by hand",
    )
}

fn bpf_linker_ok() -> bool {
    output(command("bpf-linker").arg("--version"))
        .is_some_and(|v| v.trim().ends_with(BPF_LINKER_VERSION))
}

/// bpf-linker built against the nightly toolchain's own LLVM (the brief's recipe). The
/// binary keeps an rpath to the prefix, so the prefix lives under ~/.local/share.
fn bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("cannot ask the nightly rustc for its sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so")))
        .with_context(|| {
            format!(
                "no libLLVM in {}; is the nightly toolchain complete?",
                lib.display()
            )
        })?;
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"])).unwrap_or_default();
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot read the nightly rustc's LLVM version")?
        .to_string();
    let prefix = home()
        .join(".local/share/mssp-toolchain")
        .join(format!("llvm-{}", llvm.trim_start_matches("lib")));
    let plib = prefix.join("lib");
    fs::create_dir_all(&plib).with_context(|| format!("cannot create {}", plib.display()))?;
    for name in ["libLLVM.so".to_string(), llvm.clone()] {
        let link = plib.join(&name);
        let _ = fs::remove_file(&link);
        symlink(lib.join(&llvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {llvm} (LLVM {major}); this takes a minute"
    );
    run(command("cargo")
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{major}")]))
    .context(
        "building bpf-linker failed (see above); it needs crates.io and the nightly toolchain",
    )?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but does not run; check ~/.cargo/bin/bpf-linker --version");
    }
    Ok(())
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, cmd)| {
            output(Command::new("sh").args(["-c", &format!("command -v {cmd}")])).is_none()
        })
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: install them with `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages {}", missing.join(", "));
    let install = |update: bool| -> Result<()> {
        if update {
            run(Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install(false).or_else(|_| install(true)).with_context(|| {
        format!(
            "could not install {}; install them with apt-get",
            missing.join(", ")
        )
    })
}
