//! The `--baseline` row of `cargo xtask bench`: a baseline of 200 listener
//! entries (none matching the load generator's port, so its listener drifts once
//! and every event after it is still checked).
use std::path::PathBuf;

use anyhow::Result;

use crate::util;

/// Write the 200-entry baseline; its path.
pub fn two_hundred_entries() -> Result<PathBuf> {
    let path = util::workspace_root().join("target/bench/baseline-200.toml");
    let mut text = String::from("version = 1\n");
    for i in 0..200u16 {
        text.push_str(&format!(
            "\n[[listener]]\nexe = \"/usr/sbin/service-{}\"\nuser = \"root\"\nfamily = \"ipv4\"\nbind = \"{}\"\nport = {}\n",
            i % 40,
            if i % 2 == 0 { "any" } else { "loopback" },
            1000 + i
        ));
    }
    std::fs::create_dir_all(path.parent().unwrap_or(&util::workspace_root()))?;
    std::fs::write(&path, text)?;
    Ok(path)
}
