//! The state store. **This is the only module that touches sled.**
//!
//! Trees: `instances` (name → record), `backups` (UUID → record), `restores` (key → record),
//! `journal` (sequence number, big-endian → entry), `storages` (name → the repository id it
//! uses; a tree added without a schema change, empty in older stores) and `meta`
//! (`schema_version`). Each value
//! is one format byte followed by the record as JSON, so a record can change shape later
//! without guessing. **Every write is flushed to disk before the call returns**, so a state
//! transition that was reported is durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::records::*;

/// The layout this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// The first byte of every stored record.
const RECORD_FORMAT: u8 = 1;

/// Migrations, in order: `MIGRATIONS[i]` turns schema `i + 1` into `i + 2`. Empty while the
/// schema is at its first version; a new layout adds a function here and bumps
/// `SCHEMA_VERSION`.
type Migration = fn(&Store) -> Result<(), StateError>;
const MIGRATIONS: &[Migration] = &[];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state store in {} is in use by another process (is `backplan run` running?): {source}", dir.display())]
    Locked {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("state store in {}: {op}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the state store holds an unreadable {tree} record {key:?}: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error(
        "the state store in {} has schema version {found}, newer than this backplan supports ({SCHEMA_VERSION}); run a newer backplan",
        dir.display()
    )]
    TooNew { dir: PathBuf, found: u32 },
}

pub struct Store {
    dir: PathBuf,
    /// sled stops for good after an I/O error (a full disk): every later call fails, even once
    /// space is back. The handles of a call that failed are dropped, and the next call opens
    /// the store again (`None` until it succeeds).
    handles: RwLock<Option<Arc<Handles>>>,
    /// The records as last read, so that `status` still answers while the store cannot be read.
    last_read: Mutex<Option<Recorded>>,
    /// Set when the store was opened again after an error (see [`Store::take_reopened`]).
    reopened: std::sync::atomic::AtomicBool,
}

struct Handles {
    db: sled::Db,
    instances: sled::Tree,
    backups: sled::Tree,
    restores: sled::Tree,
    journal: sled::Tree,
    storages: sled::Tree,
    meta: sled::Tree,
}

impl Handles {
    fn open(dir: &Path) -> Result<Handles, StateError> {
        // Every write is flushed by this module, so sled's periodic flusher adds nothing but
        // wake-ups (twice a second, with an fsync each); it runs once a minute instead of being
        // turned off because it also compacts sled's log.
        let open = || {
            sled::Config::new()
                .path(dir)
                .flush_every_ms(Some(60_000))
                .open()
        };
        // Only after sled refused the store (and so does not hold it): a process that holds
        // it may be writing a snapshot at this very moment.
        let db = match open() {
            Err(sled::Error::Corruption { .. }) if remove_empty_snapshots_in_progress(dir)? => {
                open()
            }
            other => other,
        }
        .map_err(|e| match e {
            sled::Error::Io(ref io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StateError::Locked {
                    dir: dir.to_path_buf(),
                    source: e,
                }
            }
            e => StateError::Sled(e),
        })?;
        Ok(Handles {
            instances: db.open_tree("instances")?,
            backups: db.open_tree("backups")?,
            restores: db.open_tree("restores")?,
            journal: db.open_tree("journal")?,
            storages: db.open_tree("storages")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }
}

impl Store {
    /// Opens (creating it if needed) the state store in `dir`, migrating it to the current
    /// schema.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        // The records name every path and key file: the folder is the daemon's alone.
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StateError::Io {
                    dir: dir.to_path_buf(),
                    op: "creating the state folder",
                    source,
                })?;
        }
        let store = Store {
            dir: dir.to_path_buf(),
            handles: RwLock::new(Some(Arc::new(Handles::open(dir)?))),
            last_read: Mutex::new(None),
            reopened: std::sync::atomic::AtomicBool::new(false),
        };
        let found = store.schema_version()?;
        match found {
            None => store.set_schema_version(SCHEMA_VERSION)?,
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StateError::TooNew {
                    dir: dir.to_path_buf(),
                    found: v,
                });
            }
            Some(v) => {
                for (i, migrate) in MIGRATIONS
                    .iter()
                    .enumerate()
                    .skip((v as usize).saturating_sub(1))
                {
                    migrate(&store)?;
                    store.set_schema_version(i as u32 + 2)?;
                }
            }
        }
        Ok(store)
    }

    /// Runs `f` on the open handles, opening the store again first if an earlier call failed.
    /// A sled error drops the handles (see the `handles` field).
    fn with<T>(&self, f: impl FnOnce(&Handles) -> Result<T, StateError>) -> Result<T, StateError> {
        let h = self.open_handles()?;
        let result = f(&h);
        if let Err(StateError::Sled(e)) = &result {
            let mut slot = self.handles.write().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &h)) {
                tracing::error!(
                    "state store {}: {e}; it is opened again at the next use",
                    self.dir.display()
                );
                *slot = None;
            }
        }
        result
    }

    fn open_handles(&self) -> Result<Arc<Handles>, StateError> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(h.clone());
        }
        let mut slot = self.handles.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        // sled's threads let go of the dropped handles within moments.
        let start = std::time::Instant::now();
        let h = loop {
            match Handles::open(&self.dir) {
                Err(StateError::Locked { .. })
                    if start.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break Arc::new(other?),
            }
        };
        tracing::info!("state store {}: opened again", self.dir.display());
        self.reopened
            .store(true, std::sync::atomic::Ordering::SeqCst);
        *slot = Some(h.clone());
        Ok(h)
    }

    /// Whether the store was opened again after an error since the last call: the operation
    /// that failed may have left a record `running`, to resolve as at a start.
    pub fn take_reopened(&self) -> bool {
        self.reopened
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    pub fn schema_version(&self) -> Result<Option<u32>, StateError> {
        self.with(|h| {
            Ok(h.meta.get("schema_version")?.map(|v| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&v[..4]);
                u32::from_be_bytes(b)
            }))
        })
    }

    fn set_schema_version(&self, v: u32) -> Result<(), StateError> {
        self.with(|h| {
            h.meta.insert("schema_version", &v.to_be_bytes())?;
            h.flush()
        })
    }

    /// Everything recorded, for the planner and the status commands.
    pub fn load(&self) -> Result<Recorded, StateError> {
        let rec = self.with(|h| {
            let mut rec = Recorded::default();
            for item in h.instances.iter() {
                let (k, v) = item?;
                let r: InstanceRecord = decode("instances", &k, &v)?;
                rec.instances.insert(r.name.clone(), r);
            }
            for item in h.backups.iter() {
                let (k, v) = item?;
                let r: BackupRecord = decode("backups", &k, &v)?;
                rec.backups.insert(r.id, r);
            }
            for item in h.restores.iter() {
                let (k, v) = item?;
                let r: RestoreRecord = decode("restores", &k, &v)?;
                rec.restores.insert(r.key.clone(), r);
            }
            Ok(rec)
        })?;
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = Some(rec.clone());
        Ok(rec)
    }

    /// What [`Store::load`] returned last, for answers while the store cannot be read.
    pub fn last_read(&self) -> Option<Recorded> {
        self.last_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get_instance(&self, name: &str) -> Result<Option<InstanceRecord>, StateError> {
        self.with(|h| {
            h.instances
                .get(name.as_bytes())?
                .map(|v| decode("instances", name.as_bytes(), &v))
                .transpose()
        })
    }

    pub fn get_backup(&self, id: Uuid) -> Result<Option<BackupRecord>, StateError> {
        self.with(|h| {
            h.backups
                .get(id.as_bytes())?
                .map(|v| decode("backups", id.as_bytes(), &v))
                .transpose()
        })
    }

    pub fn get_storage(&self, name: &str) -> Result<Option<StorageRecord>, StateError> {
        self.with(|h| {
            h.storages
                .get(name.as_bytes())?
                .map(|v| decode("storages", name.as_bytes(), &v))
                .transpose()
        })
    }

    pub fn put_storage(&self, r: &StorageRecord) -> Result<(), StateError> {
        self.with(|h| {
            h.storages.insert(r.name.as_bytes(), encode(r))?;
            h.flush()
        })
    }

    /// Whether any backup recorded on `storage` has (or had) a snapshot in its repository.
    pub fn storage_has_backups(&self, storage: &str) -> Result<bool, StateError> {
        self.with(|h| {
            for item in h.backups.iter() {
                let (k, v) = item?;
                let b: BackupRecord = decode("backups", &k, &v)?;
                if b.storage == storage && b.snapshot_id.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    pub fn remove_restore(&self, key: &str) -> Result<(), StateError> {
        self.with(|h| {
            h.restores.remove(key.as_bytes())?;
            h.flush()
        })
    }

    pub fn put_instance(&self, r: &InstanceRecord) -> Result<(), StateError> {
        self.with(|h| {
            h.instances.insert(r.name.as_bytes(), encode(r))?;
            h.flush()
        })
    }

    pub fn remove_instance(&self, name: &str) -> Result<(), StateError> {
        self.with(|h| {
            h.instances.remove(name.as_bytes())?;
            h.flush()
        })
    }

    pub fn put_backup(&self, r: &BackupRecord) -> Result<(), StateError> {
        self.with(|h| {
            h.backups.insert(r.id.as_bytes(), encode(r))?;
            h.flush()
        })
    }

    pub fn remove_backup(&self, id: Uuid) -> Result<(), StateError> {
        self.with(|h| {
            h.backups.remove(id.as_bytes())?;
            h.flush()
        })
    }

    pub fn put_restore(&self, r: &RestoreRecord) -> Result<(), StateError> {
        self.with(|h| {
            h.restores.insert(r.key.as_bytes(), encode(r))?;
            h.flush()
        })
    }

    /// Writes everything in `rec` (used to import fixtures and by tests).
    pub fn put_all(&self, rec: &Recorded) -> Result<(), StateError> {
        self.with(|h| {
            for r in rec.instances.values() {
                h.instances.insert(r.name.as_bytes(), encode(r))?;
            }
            for r in rec.backups.values() {
                h.backups.insert(r.id.as_bytes(), encode(r))?;
            }
            for r in rec.restores.values() {
                h.restores.insert(r.key.as_bytes(), encode(r))?;
            }
            h.flush()
        })
    }

    /// Appends a journal entry and returns its sequence number.
    pub fn journal(
        &self,
        at: DateTime<Utc>,
        op: &str,
        address: &str,
        phase: Phase,
        detail: &str,
    ) -> Result<u64, StateError> {
        self.with(|h| {
            let seq = h.db.generate_id()?;
            let e = JournalEntry {
                seq,
                at,
                op: op.to_string(),
                address: address.to_string(),
                phase,
                detail: detail.to_string(),
            };
            h.journal.insert(seq.to_be_bytes(), encode(&e))?;
            h.flush()?;
            Ok(seq)
        })
    }

    pub fn journal_entries(&self) -> Result<Vec<JournalEntry>, StateError> {
        self.with(|h| {
            h.journal
                .iter()
                .map(|item| {
                    let (k, v) = item?;
                    decode("journal", &k, &v)
                })
                .collect()
        })
    }
}

/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, then renames it. When the disk is
/// full the file stays behind empty, sled takes it for the newest snapshot and refuses the
/// store ("Read corrupted data") even after space returns. An empty one holds nothing: it is
/// removed (and logged). A non-empty one is never touched. Returns whether one was removed.
fn remove_empty_snapshots_in_progress(dir: &Path) -> Result<bool, StateError> {
    let io = |op| {
        move |source| StateError::Io {
            dir: dir.to_path_buf(),
            op,
            source,
        }
    };
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io("listing the state folder"))? {
        let entry = entry.map_err(io("listing the state folder"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let empty_file = entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
        if name.starts_with("snap.") && name.ends_with(".generating") && empty_file {
            std::fs::remove_file(entry.path())
                .map_err(io("removing an empty snapshot left by a full disk"))?;
            tracing::warn!(
                "state store {}: removed {name}, an empty snapshot left by an interrupted write (a full disk?); the store opens from the previous one",
                dir.display()
            );
            removed = true;
        }
    }
    Ok(removed)
}

/// The recorded state in `dir` without creating anything: an absent directory is an empty
/// state (a first `plan` before any `apply`).
pub fn read(dir: &Path) -> Result<Recorded, StateError> {
    if !dir.join("db").exists() && !dir.join("conf").exists() {
        return Ok(Recorded::default());
    }
    Store::open(dir)?.load()
}

/// The journal in `dir` (empty when there is no state yet).
pub fn journal(dir: &Path) -> Result<Vec<JournalEntry>, StateError> {
    if !dir.join("db").exists() && !dir.join("conf").exists() {
        return Ok(Vec::new());
    }
    Store::open(dir)?.journal_entries()
}

fn encode<T: Serialize>(r: &T) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    serde_json::to_writer(&mut out, r).expect("records serialise");
    out
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], v: &[u8]) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match v.split_first() {
        Some((&RECORD_FORMAT, json)) => {
            serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
        }
        Some((f, _)) => Err(corrupt(format!("unknown record format {f}"))),
        None => Err(corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_state_dir_reads_as_empty_and_is_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        assert_eq!(read(&dir).unwrap(), Recorded::default());
        assert!(!dir.exists());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = Store::open(tmp.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), Some(SCHEMA_VERSION));
            s.set_schema_version(SCHEMA_VERSION + 1).unwrap();
        }
        assert!(matches!(
            Store::open(tmp.path()),
            Err(StateError::TooNew { .. })
        ));
    }

    #[test]
    fn a_corrupt_record_is_reported_not_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = Store::open(tmp.path()).unwrap();
            s.with(|h| {
                h.instances.insert("x", b"\x01{not json")?;
                h.flush()
            })
            .unwrap();
        }
        let err = read(tmp.path()).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Corrupt {
                    tree: "instances",
                    ..
                }
            ),
            "{err}"
        );
    }

    fn instance(name: &str) -> InstanceRecord {
        InstanceRecord {
            name: name.into(),
            kind: crate::config::InstanceType::Sandbox,
            version: crate::config::values::Version::parse("1").unwrap(),
            source: crate::config::Source::Directory {
                path: format!("/srv/{name}").into(),
            },
            created_at: Utc::now(),
            updated_at: Utc::now(),
            error: None,
            creation_failed: false,
        }
    }

    fn snapshot_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap."))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_empty_snapshot_left_by_a_full_disk_is_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..50).map(|i| format!("i{i}")).collect();
        {
            let s = Store::open(tmp.path()).unwrap();
            for n in &names {
                s.put_instance(&instance(n)).unwrap();
            }
        }
        // What sled leaves when the disk fills while it writes a snapshot: an empty file,
        // named after a later position than any complete snapshot.
        let planted = tmp.path().join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&planted, b"").unwrap();
        let rec = read(tmp.path()).expect("the store opens");
        assert_eq!(rec.instances.len(), names.len(), "every record is back");
        assert!(!planted.exists(), "the empty snapshot was removed");

        // A snapshot in progress that holds bytes is sled's to judge, never deleted.
        let kept = tmp.path().join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&kept, b"not empty, not a snapshot either").unwrap();
        assert!(read(tmp.path()).is_err(), "sled refuses a corrupt snapshot");
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            b"not empty, not a snapshot either"
        );
        assert!(snapshot_files(tmp.path()).contains(&"snap.7FFFFFFFFFFFFFFF.generating".into()));
    }

    /// A small tmpfs at `dir`, unmounted on drop; `None` (the test says why) where mounting
    /// is not possible (not root, no mount namespace).
    struct Tmpfs(PathBuf);
    impl Tmpfs {
        fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .output();
            match out {
                Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
                Ok(o) => {
                    eprintln!(
                        "SKIPPED: cannot mount a tmpfs to fill: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    None
                }
                Err(e) => {
                    eprintln!("SKIPPED: cannot run mount: {e}");
                    None
                }
            }
        }
    }
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// Fills the filesystem of `dir` with `dir/filler` until it is full.
    fn fill(dir: &Path) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(dir.join("filler")).unwrap();
        let block = vec![0x5au8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..512]).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
        let _ = f.sync_all();
    }

    /// `read`, waiting for sled's threads of a store just dropped in this process to let go.
    fn reread(dir: &Path) -> Result<Recorded, StateError> {
        let start = std::time::Instant::now();
        loop {
            match read(dir) {
                Err(StateError::Locked { .. })
                    if start.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    #[test]
    fn a_full_disk_fails_writes_cleanly_and_the_store_reopens_once_space_is_back() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(_mounted) = Tmpfs::mount(tmp.path(), "16m") else {
            return;
        };
        let dir = tmp.path().join("state");
        let names = |from: &'static str| (0..20).map(move |i| format!("{from}{i}"));
        {
            let store = Store::open(&dir).unwrap();
            for n in names("first") {
                store.put_instance(&instance(&n)).unwrap();
            }
        }
        reread(&dir).unwrap(); // sled writes its snapshot
        let store = Store::open(&dir).unwrap();
        for n in names("second") {
            store.put_instance(&instance(&n)).unwrap();
        }

        store.load().unwrap();

        fill(tmp.path());
        // A write fails with an error, not a panic; so do the next ones.
        let e = (0..10_000)
            .find_map(|i| store.put_instance(&instance(&format!("full{i}"))).err())
            .expect("writes fail on a full disk");
        assert!(e.to_string().contains("No space left on device"), "{e}");
        for i in 0..3 {
            let e = store.put_instance(&instance(&format!("still-full{i}")));
            assert!(e.is_err(), "the disk is still full");
        }
        // What was read last stays available (for `status`).
        let e = store.load().unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert_eq!(store.last_read().unwrap().instances.len(), 40);
        // Opening it again while full left an empty snapshot in progress: the trap.
        let files = snapshot_files(&dir);
        let left = files
            .iter()
            .find(|f| f.ends_with(".generating"))
            .unwrap_or_else(|| panic!("sled left a snapshot in progress: {files:?}"));
        assert_eq!(std::fs::metadata(dir.join(left)).unwrap().len(), 0);

        // Space is back: the same store works again, with every record written before.
        std::fs::remove_file(tmp.path().join("filler")).unwrap();
        store.put_instance(&instance("space-is-back")).unwrap();
        let rec = store.load().unwrap();
        for n in names("first").chain(names("second")) {
            assert!(rec.instances.contains_key(&n), "{n} is back");
        }
        assert!(rec.instances.contains_key("space-is-back"));
        assert!(
            !snapshot_files(&dir)
                .iter()
                .any(|f| f.ends_with(".generating"))
        );
        drop(store);
        let again = reread(&dir).unwrap();
        assert_eq!(again.instances, rec.instances);
    }

    #[test]
    fn the_state_folder_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        Store::open(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_second_process_sees_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = Store::open(tmp.path()).unwrap();
        // sled locks the directory per process; within one process a second open fails the
        // same way a second daemon would.
        match Store::open(tmp.path()) {
            Err(StateError::Locked { .. }) => {}
            Err(e) => panic!("expected a lock error, got {e}"),
            Ok(_) => panic!("a second open of a held store succeeded"),
        }
    }
}
