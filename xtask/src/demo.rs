//! `cargo xtask demo` (filled in with the agent).

use anyhow::Result;

pub fn demo() -> Result<()> {
    anyhow::bail!("the demo needs `mssp agent`, which is not built yet")
}
