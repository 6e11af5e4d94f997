//! Scratch directories: one fresh directory per check and run of the suite.
use std::path::PathBuf;

use anyhow::Result;

/// `$TMPDIR/pw-NAME-PID`, emptied of anything an earlier run left and created.
pub fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
