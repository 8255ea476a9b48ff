//! `cargo xtask deb`: a Debian package of the `mssp` binary, its systemd unit, a default
//! config (a conffile), sysusers.d (group mssp) and tmpfiles.d entries, the man page and
//! shell completions — staged and built with `dpkg-deb`, no other tool needed.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, run, workspace_root};

fn version() -> Result<String> {
    let toml = fs::read_to_string(workspace_root().join("Cargo.toml"))?;
    toml.lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
        })
        .map(str::to_string)
        .context("no version in the workspace Cargo.toml")
}

fn arch() -> Result<String> {
    let out = Command::new("dpkg").arg("--print-architecture").output()?;
    if !out.status.success() {
        bail!("dpkg --print-architecture failed: is this a Debian system?");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn put(stage: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let p = stage.join(rel);
    fs::create_dir_all(p.parent().unwrap_or(stage))?;
    fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds `target/debian/mssp_VERSION-1_ARCH.deb` and returns its path.
pub fn deb() -> Result<PathBuf> {
    cargo(&["build", "--release"])?;
    let ws = workspace_root();
    let (version, arch) = (version()?, arch()?);
    let out_dir = ws.join("target/debian");
    let stage = out_dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let bin = ws.join("target/release/mssp");
    put(&stage, "usr/bin/mssp", &fs::read(&bin)?, 0o755)?;
    let unit = fs::read_to_string(ws.join("dist/mssp.service"))?
        .replace("/usr/local/bin/mssp", "/usr/bin/mssp")
        .replace(
            "file:/usr/local/share/doc/mssp/README.md",
            "file:/usr/share/doc/mssp/README.md",
        )
        .replace(
            "# mssp agent: the edge packet filter's daemon. Installed by `cargo xtask install`.",
            "# mssp agent: the edge packet filter's daemon (Debian package).",
        );
    put(
        &stage,
        "lib/systemd/system/mssp.service",
        unit.as_bytes(),
        0o644,
    )?;
    // The fleet controller's unit (enabled on the controller host only), its example
    // config and the broker's sample configuration.
    let controller = fs::read_to_string(ws.join("dist/mssp-controller.service"))?
        .replace("/usr/local/bin/mssp", "/usr/bin/mssp")
        .replace(
            "file:/usr/local/share/doc/mssp/README.md",
            "file:/usr/share/doc/mssp/README.md",
        );
    put(
        &stage,
        "lib/systemd/system/mssp-controller.service",
        controller.as_bytes(),
        0o644,
    )?;
    put(
        &stage,
        "usr/share/doc/mssp/controller.toml.example",
        &fs::read(ws.join("dist/controller.toml"))?,
        0o644,
    )?;
    put(
        &stage,
        "usr/share/doc/mssp/nats-server.conf",
        &fs::read(ws.join("dist/nats-server.conf"))?,
        0o644,
    )?;
    put(
        &stage,
        "etc/mssp/mssp.toml",
        &fs::read(ws.join("dist/mssp.toml"))?,
        0o640,
    )?;
    put(
        &stage,
        "usr/lib/sysusers.d/mssp.conf",
        &fs::read(ws.join("dist/debian/mssp.sysusers"))?,
        0o644,
    )?;
    put(
        &stage,
        "usr/lib/tmpfiles.d/mssp.conf",
        &fs::read(ws.join("dist/debian/mssp.tmpfiles"))?,
        0o644,
    )?;
    put(
        &stage,
        "usr/share/doc/mssp/README.md",
        &fs::read(ws.join("README.md"))?,
        0o644,
    )?;
    put(
        &stage,
        "usr/share/doc/mssp/copyright",
        format!("mssp {version}\nLicense: MIT OR Apache-2.0\n").as_bytes(),
        0o644,
    )?;
    // Man page and completions, from the binary's own command line.
    let assets = out_dir.join("assets");
    run(Command::new(&bin).arg("generate-assets").arg(&assets))?;
    let man = fs::read(assets.join("mssp.1"))?;
    let mut gz = Vec::new();
    {
        let mut child = Command::new("gzip")
            .args(["-9n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("gzip")?;
        use std::io::{Read, Write};
        child.stdin.take().context("gzip stdin")?.write_all(&man)?;
        child
            .stdout
            .take()
            .context("gzip stdout")?
            .read_to_end(&mut gz)?;
        child.wait()?;
    }
    put(&stage, "usr/share/man/man1/mssp.1.gz", &gz, 0o644)?;
    put(
        &stage,
        "usr/share/bash-completion/completions/mssp",
        &fs::read(assets.join("mssp.bash"))?,
        0o644,
    )?;
    put(
        &stage,
        "usr/share/zsh/vendor-completions/_mssp",
        &fs::read(assets.join("_mssp"))?,
        0o644,
    )?;
    put(
        &stage,
        "usr/share/fish/vendor_completions.d/mssp.fish",
        &fs::read(assets.join("mssp.fish"))?,
        0o644,
    )?;
    // Control files.
    let size_kib = dir_size(&stage)? / 1024;
    let control = format!(
        "Package: mssp\nVersion: {version}-1\nArchitecture: {arch}\nMaintainer: mssp developers <mssp@example.net>\n\
         Installed-Size: {size_kib}\nDepends: libc6, systemd\nSection: net\nPriority: optional\n\
         Description: edge packet filter for managed security (XDP)\n \
         The mssp agent filters attack traffic per customer at an ISP's edge routers with an\n \
         XDP program, takes policy from the centre and the NOC's CLI, and exports counters.\n"
    );
    put(&stage, "DEBIAN/control", control.as_bytes(), 0o644)?;
    put(&stage, "DEBIAN/conffiles", b"/etc/mssp/mssp.toml\n", 0o644)?;
    for s in ["postinst", "prerm", "postrm"] {
        put(
            &stage,
            &format!("DEBIAN/{s}"),
            &fs::read(ws.join("dist/debian").join(s))?,
            0o755,
        )?;
    }
    let deb = out_dir.join(format!("mssp_{version}-1_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    println!("xtask: built {}", deb.display());
    Ok(deb)
}

fn dir_size(p: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// The package installs here, creates the group, and its unit verifies; then it is purged.
pub fn check() -> Result<()> {
    let deb = deb()?;
    // A group left by an earlier run (and with no members) is removed, so that this run
    // shows the package creating it.
    let g = Command::new("getent").args(["group", "mssp"]).output()?;
    if g.status.success() && String::from_utf8_lossy(&g.stdout).trim().ends_with(':') {
        let _ = Command::new("groupdel").arg("mssp").status();
    }
    run(Command::new("dpkg").arg("-i").arg(&deb)).context("dpkg -i")?;
    let r = (|| -> Result<()> {
        let g = Command::new("getent").args(["group", "mssp"]).output()?;
        if !g.status.success() {
            bail!("installing the package did not create group mssp");
        }
        for f in [
            "/usr/bin/mssp",
            "/etc/mssp/mssp.toml",
            "/usr/share/man/man1/mssp.1.gz",
        ] {
            if !Path::new(f).exists() {
                bail!("the package did not install {f}");
            }
        }
        run(Command::new("systemd-analyze").args([
            "verify",
            "/lib/systemd/system/mssp.service",
            "/lib/systemd/system/mssp-controller.service",
        ]))
        .context("systemd-analyze verify of the installed units")
    })();
    let _ = Command::new("dpkg").args(["--purge", "mssp"]).status();
    r?;
    println!("xtask: the package installs, creates group mssp, and its unit verifies");
    Ok(())
}
