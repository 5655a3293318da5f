//! Directory instances: provisioning, and the restore swap (SPEC section 5, directory row).
//!
//! A restore never writes into the target itself: the backup is restored into a staging
//! folder beside it, synced, then exchanged with the target in one `renameat2(RENAME_EXCHANGE)`
//! call, and only then is the old tree (now at the staging path) removed. At every instant
//! the target is either the old tree or the new one.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates the folder, or adopts it if it exists. Refuses anything that is not a folder.
pub fn provision(path: &Path) -> std::io::Result<&'static str> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok("adopted"),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} exists and is not a folder; a directory instance needs a folder",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)?;
            Ok("created")
        }
        Err(e) => Err(e),
    }
}

/// The staging folder of a restore into `target`: a hidden sibling, on the same filesystem.
pub fn staging_path(target: &Path, restore_key: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.backplan-restore-{restore_key}"))
}

/// Leftover staging folders of `target` (from an interrupted restore).
pub fn leftover_staging(target: &Path) -> Vec<PathBuf> {
    let Some(parent) = target.parent() else {
        return Vec::new();
    };
    let prefix = format!(
        ".{}.backplan-restore-",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    std::fs::read_dir(parent)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Gives the staging root the target root's mode and owner (a snapshot stores the contents
/// of the instance folder, not the folder itself).
pub fn copy_root_metadata(from: &Path, to: &Path) -> std::io::Result<()> {
    let m = std::fs::metadata(from)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid())).or_else(|e| {
        // Not root: keeping our own ownership is the best possible.
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Ok(())
        } else {
            Err(e)
        }
    })
}

/// Swaps two paths atomically (both must exist).
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths, relative to the current directory fd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Syncs a folder (so that a rename in it is durable).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_swaps_two_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("x"), "old").unwrap();
        std::fs::write(b.join("x"), "new").unwrap();
        exchange(&a, &b).unwrap();
        assert_eq!(std::fs::read_to_string(a.join("x")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(b.join("x")).unwrap(), "old");
    }

    #[test]
    fn provision_adopts_folders_and_refuses_files() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(provision(&tmp.path().join("new/deep")).unwrap(), "created");
        assert_eq!(provision(&tmp.path().join("new")).unwrap(), "adopted");
        std::fs::write(tmp.path().join("file"), "").unwrap();
        assert!(provision(&tmp.path().join("file")).is_err());
    }

    #[test]
    fn staging_is_a_hidden_sibling() {
        let s = staging_path(Path::new("/srv/app"), "r1");
        assert_eq!(s, Path::new("/srv/.app.backplan-restore-r1"));
    }
}
