//! `cargo xtask install`: the binary, the systemd unit, a commented default config and the
//! README, under an optional staging root (packaging, tests).

use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

use anyhow::{Context as _, Result};

use crate::util::{cargo, workspace_root};

pub fn install(root: &Path, prefix: &str) -> Result<()> {
    cargo(&["build", "--release"])?;
    let ws = workspace_root();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let bin = at(&format!("{prefix}/bin/mssp"));
    let unit = at("/etc/systemd/system/mssp.service");
    let conf_dir = at("/etc/mssp");
    let doc = at(&format!("{prefix}/share/doc/mssp"));
    for d in [
        bin.parent().unwrap_or(root),
        unit.parent().unwrap_or(root),
        &conf_dir,
        &doc,
    ] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let tmp = bin.with_extension("new");
    fs::copy(ws.join("target/release/mssp"), &tmp).context("copying the binary")?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, &bin)?;
    let unit_text = fs::read_to_string(ws.join("dist/mssp.service"))?
        .replace("/usr/local/bin/mssp", &format!("{prefix}/bin/mssp"))
        .replace("/usr/local/share/doc", &format!("{prefix}/share/doc"));
    fs::write(&unit, unit_text)?;
    // The fleet controller's unit (enable it on the controller host only), a commented
    // config and the broker's sample configuration.
    let controller_unit = at("/etc/systemd/system/mssp-controller.service");
    let text = fs::read_to_string(ws.join("dist/mssp-controller.service"))?
        .replace("/usr/local/bin/mssp", &format!("{prefix}/bin/mssp"))
        .replace("/usr/local/share/doc", &format!("{prefix}/share/doc"));
    fs::write(&controller_unit, text)?;
    fs::copy(
        ws.join("dist/controller.toml"),
        conf_dir.join("controller.toml.example"),
    )?;
    let conf = conf_dir.join("mssp.toml");
    let conf_written = if conf.exists() {
        let new = conf_dir.join("mssp.toml.new");
        fs::copy(ws.join("dist/mssp.toml"), &new)?;
        format!(
            "{} exists and was kept; the default is in {}",
            conf.display(),
            new.display()
        )
    } else {
        fs::copy(ws.join("dist/mssp.toml"), &conf)?;
        format!("{} (edit interfaces first)", conf.display())
    };
    fs::copy(ws.join("README.md"), doc.join("README.md"))?;
    fs::copy(
        ws.join("dist/nats-server.conf"),
        doc.join("nats-server.conf"),
    )?;
    if root == Path::new("/") {
        let has_group = Command::new("getent")
            .args(["group", "mssp"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_group {
            let _ = Command::new("groupadd").args(["--system", "mssp"]).status();
        }
    }
    println!(
        "installed:\n  {}\n  {}\n  {conf_written}\n  {}",
        bin.display(),
        unit.display(),
        doc.join("README.md").display()
    );
    println!(
        "next: add NOC users to group mssp, edit the config, then\n  systemctl daemon-reload && systemctl enable --now mssp"
    );
    Ok(())
}
