//! Scratch databases for the history's unit tests: each in a directory of its
//! own, removed with everything in it when the test drops it.
use std::path::PathBuf;

use tempfile::TempDir;

pub struct ScratchDb {
    dir: TempDir,
}

impl ScratchDb {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pw-history-")
            .tempdir()
            .expect("a scratch directory");
        Self { dir }
    }

    /// The database's path, in the scratch directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("h.db")
    }

    /// A database path whose directory does not exist yet.
    pub fn nested(&self) -> PathBuf {
        self.dir.path().join("sub").join("h.db")
    }
}
