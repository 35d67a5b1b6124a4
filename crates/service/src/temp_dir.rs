//! For tests: a directory of a test's own under the system's temporary one, removed with all it
//! holds when dropped. Not created here: what the test opens in it creates it, as it would in
//! production.

use std::path::PathBuf;

pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    /// A new name under the system's temporary directory, starting with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self(std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
