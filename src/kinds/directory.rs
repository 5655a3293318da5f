//! Directory instances: provisioning, and the restore swap (SPEC section 5, directory row).
//!
//! A restore never writes into the target itself: the backup is restored into a staging
//! folder beside it, synced, then exchanged with the target in one `renameat2(RENAME_EXCHANGE)`
//! call, and only then is the old tree (now at the staging path) removed. At every instant
//! the target is either the old tree or the new one.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{BackupSource, Kind, RestoreInto, Target};
use crate::config::Source;

/// The directory kind (`source = { kind = "directory", path = ... }`).
pub struct Directory;

fn path_of(source: &Source) -> Result<&Path, String> {
    match source {
        Source::Directory { path } => Ok(path),
        other => Err(format!(
            "{} is not a directory instance's source",
            other.describe()
        )),
    }
}

impl Kind for Directory {
    fn provision(&self, source: &Source) -> Result<&'static str, String> {
        provision(path_of(source)?).map_err(|e| e.to_string())
    }

    fn backup_source(&self, source: &Source, instance: &str) -> Result<BackupSource, String> {
        let path = path_of(source)?;
        check_source(path, instance)?;
        Ok(BackupSource::Tree(path.to_path_buf()))
    }

    fn open_target(&self, source: &Source) -> Result<Box<dyn Target>, String> {
        let t = RestoreTarget::open(path_of(source)?).map_err(|e| e.to_string())?;
        Ok(Box::new(t))
    }

    fn discard_leftovers(&self, source: &Source) -> Vec<String> {
        let Ok(path) = path_of(source) else {
            return Vec::new();
        };
        leftover_staging(path)
            .into_iter()
            .map(|leftover| match std::fs::remove_dir_all(&leftover) {
                Ok(()) => format!("removed the leftover staging folder {}", leftover.display()),
                Err(e) => format!("cannot remove {}: {e}", leftover.display()),
            })
            .collect()
    }

    fn store_path(&self, source: &Source) -> Option<PathBuf> {
        path_of(source).ok().map(Path::to_path_buf)
    }
}

impl Target for RestoreTarget {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn check_apart_from(&self, protected: &[(String, PathBuf)]) -> Result<(), String> {
        let shown = self.path.display();
        let chain = self
            .identity_chain()
            .map_err(|e| format!("cannot check where {shown} is: {e}"))?;
        for (what, path) in protected {
            let other = identity_chain(path)
                .map_err(|e| format!("cannot check where {} is: {e}", path.display()))?;
            if overlaps(&chain, &other) {
                return Err(format!(
                    "{shown} is, holds or is inside {what} ({}); a restore there would replace it, so nothing was restored. Give the sandbox a folder of its own",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    fn stage(&self, restore_key: &str) -> Result<RestoreInto, String> {
        self.make_staging(restore_key)
            .map(RestoreInto::Tree)
            .map_err(|e| format!("preparing the staging folder: {e}"))
    }

    fn prepare(&self, restore_key: &str) -> Result<(), String> {
        self.copy_root_metadata(restore_key)
            .map_err(|e| format!("preparing the restored tree: {e}"))
    }

    fn commit(&self, restore_key: &str) -> Result<(), String> {
        self.exchange(restore_key)
            .map_err(|e| format!("swapping the restored tree into place: {e}"))
    }

    fn finish(&self, restore_key: &str) -> Result<(), String> {
        let staging = staging_path(&self.path, restore_key);
        self.sync_parent().map_err(|e| {
            format!(
                "the restored tree is in place, but syncing {} failed ({e}); the old tree was kept at {}",
                self.path.display(),
                staging.display()
            )
        })?;
        crate::failpoint!("directory.synced-old-kept");
        if let Err(e) = self.remove_staging(restore_key) {
            tracing::warn!(
                "the old tree at {} could not be removed: {e}",
                staging.display()
            );
        }
        Ok(())
    }

    fn discard(&self, restore_key: &str) {
        if let Err(e) = self.remove_staging(restore_key) {
            tracing::warn!(
                "the staging folder of {} could not be removed: {e}",
                self.path.display()
            );
        }
    }
}

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

/// A file's identity: device and inode.
pub type FileId = (u64, u64);

/// What `statx` says about one entry, without following a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) id: FileId,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// The entry is the root of a mount (bind mounts included), when the kernel says so.
    pub(super) mount_root: bool,
}

impl Entry {
    pub(super) fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    pub(super) fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

pub(super) fn cstr(name: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(std::io::Error::other)
}

pub(super) fn stat_at(dir: &OwnedFd, name: &CString) -> std::io::Result<Entry> {
    // SAFETY: statx is plain data; zeroed is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd, a NUL-terminated name and a buffer of the right type.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(Entry {
        id: (
            libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            st.stx_ino,
        ),
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        gid: st.stx_gid,
        mount_root: st.stx_attributes_mask & mount_root != 0 && st.stx_attributes & mount_root != 0,
    })
}

pub(super) fn open_at(
    dir: Option<&OwnedFd>,
    name: &CString,
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid fd (or AT_FDCWD) and a NUL-terminated name.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The target folder of a restore, held through its opened parent: every step after
/// [`RestoreTarget::open`] works relative to that descriptor, so no path is walked again
/// between the checks and the swap.
pub struct RestoreTarget {
    path: PathBuf,
    parent: OwnedFd,
    parent_entry: Entry,
    name: CString,
    entry: Entry,
}

impl RestoreTarget {
    /// Opens the parent of `target` and checks that the target is a folder that can be
    /// swapped: not a symbolic link, not a mount point, on the parent's filesystem (where the
    /// staging sibling will be).
    pub fn open(target: &Path) -> std::io::Result<RestoreTarget> {
        let refuse = |why: String| std::io::Error::other(why);
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(refuse(format!(
                "{} has no parent folder and name to swap it by",
                target.display()
            )));
        };
        let parent_path = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let at = |e: std::io::Error| refuse(format!("{}: {e}", parent_path.display()));
        let parent = open_at(
            None,
            &cstr(parent_path.as_os_str())?,
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(at)?;
        let parent_entry = stat_at(&parent, &CString::default()).map_err(at)?;
        let name = cstr(name)?;
        let mut t = RestoreTarget {
            path: target.to_path_buf(),
            parent,
            parent_entry,
            // Replaced by the target's own entry right below.
            entry: parent_entry,
            name,
        };
        t.entry = t.check()?;
        Ok(t)
    }

    /// Checks the target again (as it is now, through the opened parent) and returns it.
    fn check(&self) -> std::io::Result<Entry> {
        let refuse = |why: String| Err(std::io::Error::other(why));
        let shown = self.path.display();
        let e = stat_at(&self.parent, &self.name)
            .map_err(|e| std::io::Error::other(format!("{shown}: {e}")))?;
        if e.is_symlink() {
            return refuse(format!(
                "{shown} is a symbolic link; a restore replaces a real folder only, never what a link points to"
            ));
        }
        if !e.is_dir() {
            return refuse(format!("{shown} is not a folder"));
        }
        if e.mount_root || e.id.0 != self.parent_entry.id.0 {
            return refuse(format!(
                "{shown} is a mount point (or on another filesystem than its parent folder); the restored tree is prepared beside it and swapped in with one rename, which cannot cross filesystems. Restore into a folder inside the mount instead"
            ));
        }
        Ok(e)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The target's identity and that of each folder above it, up to `/`, deepest first:
    /// found through the opened parent and `..`, never by path.
    pub fn identity_chain(&self) -> std::io::Result<Vec<FileId>> {
        identity_chain_at(&self.parent, &self.name)
    }

    /// Creates the (empty) staging sibling for `restore_key`, on the parent's filesystem, and
    /// returns its path for the engine to restore into.
    pub fn make_staging(&self, restore_key: &str) -> std::io::Result<PathBuf> {
        let name = self.staging_name(restore_key);
        let path = staging_path(&self.path, restore_key);
        // A leftover of an earlier try: it is ours (a hidden name with the restore's key).
        if stat_at(&self.parent, &name).is_ok() {
            std::fs::remove_dir_all(&path)?;
        }
        // SAFETY: a valid fd and a NUL-terminated name.
        if unsafe { libc::mkdirat(self.parent.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let e = stat_at(&self.parent, &name)?;
        if !e.is_dir() || e.id.0 != self.parent_entry.id.0 {
            return Err(std::io::Error::other(format!(
                "the staging folder {} is not on the filesystem of {}",
                path.display(),
                self.path.display()
            )));
        }
        Ok(path)
    }

    fn staging_name(&self, restore_key: &str) -> CString {
        let name = staging_path(&self.path, restore_key);
        cstr(name.file_name().expect("a staging path has a name")).expect("no NUL")
    }

    /// Gives the staging root the target root's mode and owner (a snapshot stores the
    /// contents of the instance folder, not the folder itself).
    pub fn copy_root_metadata(&self, restore_key: &str) -> std::io::Result<()> {
        let staging = staging_path(&self.path, restore_key);
        std::fs::set_permissions(
            &staging,
            std::fs::Permissions::from_mode(self.entry.mode & 0o7777),
        )?;
        std::os::unix::fs::chown(&staging, Some(self.entry.uid), Some(self.entry.gid)).or_else(
            |e| {
                // Not root: keeping our own ownership is the best possible.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    Ok(())
                } else {
                    Err(e)
                }
            },
        )
    }

    /// Checks the target once more (still the same folder, still no link or mount point),
    /// then swaps the staging sibling in with one `renameat2(RENAME_EXCHANGE)` in the opened
    /// parent. `Ok` means the exchange happened.
    pub fn exchange(&self, restore_key: &str) -> std::io::Result<()> {
        let now = self.check()?;
        if now.id != self.entry.id {
            return Err(std::io::Error::other(format!(
                "{} was replaced by another folder during the restore",
                self.path.display()
            )));
        }
        let staging = self.staging_name(restore_key);
        let fd = self.parent.as_raw_fd();
        // SAFETY: a valid fd and NUL-terminated names, both in that folder.
        let rc = unsafe {
            libc::renameat2(
                fd,
                staging.as_ptr(),
                fd,
                self.name.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            crate::failpoint!("directory.exchanged-unsynced");
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Makes the exchange durable (syncs the parent folder).
    pub fn sync_parent(&self) -> std::io::Result<()> {
        let dir = open_at(
            Some(&self.parent),
            &CString::new(".").expect("no NUL"),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?;
        std::fs::File::from(dir).sync_all()
    }

    /// Removes the staging sibling (the old tree after the exchange, or a half restore), if
    /// the parent path still leads to the opened parent.
    pub fn remove_staging(&self, restore_key: &str) -> std::io::Result<()> {
        let staging = staging_path(&self.path, restore_key);
        let parent = staging.parent().unwrap_or(Path::new("."));
        let same = std::fs::metadata(parent)
            .map(|m| (m.dev(), m.ino()) == self.parent_entry.id)
            .unwrap_or(false);
        if !same {
            return Err(std::io::Error::other(format!(
                "{} no longer leads to the folder the restore opened; {} was left in place",
                parent.display(),
                staging.display()
            )));
        }
        match std::fs::remove_dir_all(&staging) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The identity of the entry `name` in the opened folder `parent` and that of each folder
/// above it, up to `/`, deepest first: found through `parent` and `..`, never by path.
pub(super) fn identity_chain_at(parent: &OwnedFd, name: &CString) -> std::io::Result<Vec<FileId>> {
    let mut chain = vec![stat_at(parent, name)?.id];
    let up = CString::new("..").expect("no NUL");
    let mut dir = open_at(
        Some(parent),
        &CString::new(".").expect("no NUL"),
        libc::O_PATH | libc::O_DIRECTORY,
    )?;
    loop {
        let here = stat_at(&dir, &CString::default())?.id;
        if chain.last() == Some(&here) {
            break; // `/` is its own parent
        }
        chain.push(here);
        dir = open_at(Some(&dir), &up, libc::O_PATH | libc::O_DIRECTORY)?;
    }
    Ok(chain)
}

/// The identity of `path` (symbolic links followed) and of each folder above it, deepest
/// first; for a path that does not exist, the chain of its deepest existing ancestor, and
/// `false`.
pub fn identity_chain(path: &Path) -> std::io::Result<(bool, Vec<FileId>)> {
    let path = std::path::absolute(path)?;
    let mut existing = path.as_path();
    let real = loop {
        match existing.canonicalize() {
            Ok(real) => break real,
            Err(_) => match existing.parent() {
                Some(p) => existing = p,
                None => return Ok((false, Vec::new())),
            },
        }
    };
    let mut chain = Vec::new();
    for a in real.ancestors() {
        let m = std::fs::metadata(a)?;
        chain.push((m.dev(), m.ino()));
    }
    Ok((existing == path, chain))
}

/// Whether a restore target (its chain, from [`RestoreTarget::identity_chain`]) is, contains
/// or is inside the path whose chain is `other` (from [`identity_chain`]).
pub fn overlaps(target: &[FileId], other: &(bool, Vec<FileId>)) -> bool {
    let (exists, chain) = other;
    target.first().is_some_and(|t| chain.contains(t))
        || (*exists && chain.first().is_some_and(|o| target.contains(o)))
}

/// Checks, before the engine is called, that a directory instance's data is a folder: a
/// missing folder (an unmounted disk?), a file or a symbolic link in its place is reported as
/// such.
pub fn check_source(path: &Path, instance: &str) -> Result<(), String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "the data of instance `{instance}` should be a folder, but {shown} is a symbolic link; backplan backs up a real folder only, never what a link points to"
        )),
        Ok(_) => Err(format!(
            "the data of instance `{instance}` should be a folder, but {shown} is a file (or another kind of entry); a directory instance backs up a folder"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the folder {shown} of instance `{instance}` does not exist (is a disk not mounted?); nothing was backed up"
        )),
        Err(e) => Err(format!("cannot read {shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_swaps_the_staging_tree_in() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("app");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), "old").unwrap();
        let t = RestoreTarget::open(&target).unwrap();
        let staging = t.make_staging("r1").unwrap();
        assert_eq!(staging, staging_path(&target, "r1"));
        std::fs::write(staging.join("x"), "new").unwrap();
        t.exchange("r1").unwrap();
        t.sync_parent().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("x")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(staging.join("x")).unwrap(), "old");
        t.remove_staging("r1").unwrap();
        assert!(!staging.exists());
    }

    #[test]
    fn a_symlink_target_is_refused_when_opened_and_at_the_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = RestoreTarget::open(&link).err().expect("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");

        // A folder that becomes a link between the checks and the swap.
        let target = tmp.path().join("app");
        std::fs::create_dir(&target).unwrap();
        let t = RestoreTarget::open(&target).unwrap();
        t.make_staging("r1").unwrap();
        std::fs::remove_dir(&target).unwrap();
        std::os::unix::fs::symlink(&real, &target).unwrap();
        let e = t.exchange("r1").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&target).unwrap().is_symlink());
    }

    #[test]
    fn a_mount_point_is_refused() {
        // `/proc` is a mount point on every Linux system.
        let e = RestoreTarget::open(Path::new("/proc"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("mount point"), "{e}");
    }

    #[test]
    fn identity_sees_through_links_and_dot_dot() {
        let tmp = tempfile::tempdir().unwrap();
        let prod_parent = tmp.path().join("srv");
        std::fs::create_dir_all(prod_parent.join("prod")).unwrap();
        std::os::unix::fs::symlink(&prod_parent, tmp.path().join("alias")).unwrap();
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        let prod = identity_chain(&prod_parent.join("prod")).unwrap();
        for spelling in ["alias/prod", "other/../srv/prod", "alias/../srv/prod"] {
            let t = RestoreTarget::open(&tmp.path().join(spelling)).unwrap();
            assert!(
                overlaps(&t.identity_chain().unwrap(), &prod),
                "{spelling} was not seen as production"
            );
        }
        // A missing repository inside the target's folder is reached too.
        let t = RestoreTarget::open(&prod_parent).unwrap();
        let repo = identity_chain(&prod_parent.join("state/repository")).unwrap();
        assert!(!repo.0);
        assert!(overlaps(&t.identity_chain().unwrap(), &repo));
        let t = RestoreTarget::open(&tmp.path().join("other")).unwrap();
        assert!(!overlaps(&t.identity_chain().unwrap(), &prod));
        assert!(!overlaps(&t.identity_chain().unwrap(), &repo));
    }

    #[test]
    fn sources_that_are_not_folders_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = check_source(&file, "app").unwrap_err();
        assert!(e.contains("is a file"), "{e}");
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("link")).unwrap();
        let e = check_source(&tmp.path().join("link"), "app").unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let e = check_source(&tmp.path().join("gone"), "app").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert!(check_source(tmp.path(), "app").is_ok());
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
