//! Directories and files that hold call data, readable by the relay's user alone (0700 / 0600):
//! webhook bodies name callers and carry transcripts' context, so no other local user may read them.

use std::{fs::File, io, path::Path};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` (and missing parents) owner-only, or makes an existing one owner-only. Fails
/// when the directory belongs to another user (a volume's mount point, say): use a directory
/// inside it, which the relay creates.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    create_missing_dirs(dir)?;
    restrict(dir, 0o700)
}

/// Creates whatever of `dir` and its parents is missing, owner-only, and leaves existing ones
/// as they are: for a path the user names, which may lie in a directory shared on purpose.
pub fn create_missing_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

/// Opens `path` for reading and writing, creating it owner-only if missing and making it
/// owner-only if it was not. Never truncates.
pub fn open_file(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    options.mode(0o600);
    let file = options.open(path)?;
    restrict(path, 0o600)?;
    Ok(file)
}

/// Options that create a file owner-only, for writers that need another mode of opening than
/// [`open_file`] (appending, `create_new`); add the rest as needed.
pub fn open_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Async twin of [`open_options`].
pub fn tokio_open_options() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Makes an existing `path` owner-only; a missing one is left alone.
pub fn restrict_if_present(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => restrict(path, 0o600),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_made_owner_only_whether_new_or_not() {
        let root = std::env::temp_dir().join(format!("owner-only-{}", uuid::Uuid::new_v4().simple()));
        let dir = root.join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("f");
        std::fs::write(&file, b"kept").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"kept", "never truncated");
        open_file(&dir.join("new")).unwrap();
        assert_eq!(mode(&dir.join("new")), 0o600);
        open_options().create(true).append(true).open(dir.join("appended")).unwrap();
        assert_eq!(mode(&dir.join("appended")), 0o600);
        std::fs::remove_dir_all(root).unwrap();
    }
}
