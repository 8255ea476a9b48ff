//! Builds the benchmarks' eBPF programs (`mssp-bench-ebpf`: the traffic generator and the
//! LPM-trie baseline) so the bench binary and the tests embed them. Quietly, as mssp-core's.
use std::env;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "mssp-bench-ebpf")
        .context("mssp-bench-ebpf is not in the workspace")?;
    let root_dir = pkg
        .manifest_path
        .parent()
        .context("mssp-bench-ebpf manifest has no parent")?
        .to_string();
    // SAFETY: the build script is single-threaded here.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mssp-bench-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
