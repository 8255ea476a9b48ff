//! Running commands with clear errors.

use std::{
    env,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// `~/.cargo/bin`, where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
        .join("bin")
}

pub fn home() -> PathBuf {
    env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// PATH with `~/.cargo/bin` first, for every child we start.
pub fn path_env() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin_dir()];
    if let Some(p) = env::var_os("PATH") {
        paths.extend(env::split_paths(&p));
    }
    env::join_paths(paths).unwrap_or_default()
}

pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", path_env());
    c
}

/// Runs a command, inheriting output; fails with the command line when it fails.
pub fn run(c: &mut Command) -> Result<()> {
    let status = c.status().with_context(|| format!("cannot start {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None if it cannot start or fails.
pub fn output(c: &mut Command) -> Option<String> {
    let out = c.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(command(&cargo).args(args).current_dir(workspace_root()))
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root(why: &str) -> Result<()> {
    if !is_root() {
        bail!("this needs root: {why}; run it as root (e.g. `sudo -E cargo xtask ...`)");
    }
    Ok(())
}

/// Removes namespaces and bpffs mounts left by test runs that were killed before they could
/// clean up (tests remove their own on success and on failure).
pub fn sweep_stale() {
    if let Some(list) = output(Command::new("ip").args(["netns", "list"])) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("mssp-") && !name.starts_with("mssp-demo") {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for line in mounts.lines() {
            let mut f = line.split_whitespace();
            let (dev, dir) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            if dev == "bpffs" && dir.contains("/mssp-bpffs-") {
                let _ = Command::new("umount").arg(dir).status();
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}
