//! Scratch directories: one fresh directory per check and run of the suite,
//! `$TMPDIR/pw-NAME-PID`, removed at the end of a run whose checks all passed
//! (a failed run keeps them to be looked at).
use std::path::PathBuf;

use anyhow::Result;

/// `$TMPDIR/pw-NAME-PID`, neither emptied nor created.
pub fn scratch_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pw-{name}-{}", std::process::id()))
}

/// `$TMPDIR/pw-NAME-PID`, emptied of anything an earlier run left and created.
pub fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = scratch_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes every scratch directory of this run; says how many it could not.
pub fn remove_all() -> usize {
    let suffix = format!("-{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("pw-") && name.ends_with(&suffix)
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_err())
        .count()
}
