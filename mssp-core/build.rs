//! Builds the XDP program (`mssp-ebpf`, for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker) so that `cargo build` embeds it in the `mssp` binary. The nested cargo runs
//! quietly: its progress lines would otherwise surface as dozens of `warning:` lines.
use std::{env, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "mssp-ebpf")
        .context("mssp-ebpf is not in the workspace")?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("mssp-ebpf manifest has no parent")?
        .to_string();

    // A missing bpf-linker otherwise surfaces as an obscure linker error deep in cargo output.
    if env::var_os("AYA_BUILD_SKIP").is_none() {
        let found = Command::new("bpf-linker").arg("--version").output().is_ok();
        if !found {
            bail!(
                "bpf-linker is not on PATH; run `cargo xtask setup` (it builds bpf-linker 0.13.0 \
                 against the nightly toolchain's LLVM into ~/.cargo/bin)"
            );
        }
    }
    // aya-build forwards the nested cargo's stderr as `cargo:warning`; a quiet cargo prints
    // only what matters (compiler errors and warnings still come through).
    // SAFETY: the build script is single-threaded here.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mssp-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
