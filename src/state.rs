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
    db: sled::Db,
    instances: sled::Tree,
    backups: sled::Tree,
    restores: sled::Tree,
    journal: sled::Tree,
    storages: sled::Tree,
    meta: sled::Tree,
}

impl Store {
    /// Opens (creating it if needed) the state store in `dir`, migrating it to the current
    /// schema.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        // Every write is flushed by this module, so sled's periodic flusher adds nothing but
        // wake-ups (twice a second, with an fsync each); it runs once a minute instead of being
        // turned off because it also compacts sled's log.
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(60_000))
            .open()
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
        let store = Store {
            instances: db.open_tree("instances")?,
            backups: db.open_tree("backups")?,
            restores: db.open_tree("restores")?,
            journal: db.open_tree("journal")?,
            storages: db.open_tree("storages")?,
            meta: db.open_tree("meta")?,
            db,
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

    pub fn schema_version(&self) -> Result<Option<u32>, StateError> {
        Ok(self.meta.get("schema_version")?.map(|v| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&v[..4]);
            u32::from_be_bytes(b)
        }))
    }

    fn set_schema_version(&self, v: u32) -> Result<(), StateError> {
        self.meta.insert("schema_version", &v.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Everything recorded, for the planner and the status commands.
    pub fn load(&self) -> Result<Recorded, StateError> {
        let mut rec = Recorded::default();
        for item in self.instances.iter() {
            let (k, v) = item?;
            let r: InstanceRecord = decode("instances", &k, &v)?;
            rec.instances.insert(r.name.clone(), r);
        }
        for item in self.backups.iter() {
            let (k, v) = item?;
            let r: BackupRecord = decode("backups", &k, &v)?;
            rec.backups.insert(r.id, r);
        }
        for item in self.restores.iter() {
            let (k, v) = item?;
            let r: RestoreRecord = decode("restores", &k, &v)?;
            rec.restores.insert(r.key.clone(), r);
        }
        Ok(rec)
    }

    pub fn get_instance(&self, name: &str) -> Result<Option<InstanceRecord>, StateError> {
        self.instances
            .get(name.as_bytes())?
            .map(|v| decode("instances", name.as_bytes(), &v))
            .transpose()
    }

    pub fn get_backup(&self, id: Uuid) -> Result<Option<BackupRecord>, StateError> {
        self.backups
            .get(id.as_bytes())?
            .map(|v| decode("backups", id.as_bytes(), &v))
            .transpose()
    }

    pub fn get_storage(&self, name: &str) -> Result<Option<StorageRecord>, StateError> {
        self.storages
            .get(name.as_bytes())?
            .map(|v| decode("storages", name.as_bytes(), &v))
            .transpose()
    }

    pub fn put_storage(&self, r: &StorageRecord) -> Result<(), StateError> {
        self.storages.insert(r.name.as_bytes(), encode(r))?;
        self.flush()
    }

    /// Whether any backup recorded on `storage` has (or had) a snapshot in its repository.
    pub fn storage_has_backups(&self, storage: &str) -> Result<bool, StateError> {
        for item in self.backups.iter() {
            let (k, v) = item?;
            let b: BackupRecord = decode("backups", &k, &v)?;
            if b.storage == storage && b.snapshot_id.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn remove_restore(&self, key: &str) -> Result<(), StateError> {
        self.restores.remove(key.as_bytes())?;
        self.flush()
    }

    pub fn put_instance(&self, r: &InstanceRecord) -> Result<(), StateError> {
        self.instances.insert(r.name.as_bytes(), encode(r))?;
        self.flush()
    }

    pub fn remove_instance(&self, name: &str) -> Result<(), StateError> {
        self.instances.remove(name.as_bytes())?;
        self.flush()
    }

    pub fn put_backup(&self, r: &BackupRecord) -> Result<(), StateError> {
        self.backups.insert(r.id.as_bytes(), encode(r))?;
        self.flush()
    }

    pub fn remove_backup(&self, id: Uuid) -> Result<(), StateError> {
        self.backups.remove(id.as_bytes())?;
        self.flush()
    }

    pub fn put_restore(&self, r: &RestoreRecord) -> Result<(), StateError> {
        self.restores.insert(r.key.as_bytes(), encode(r))?;
        self.flush()
    }

    /// Writes everything in `rec` (used to import fixtures and by tests).
    pub fn put_all(&self, rec: &Recorded) -> Result<(), StateError> {
        for r in rec.instances.values() {
            self.instances.insert(r.name.as_bytes(), encode(r))?;
        }
        for r in rec.backups.values() {
            self.backups.insert(r.id.as_bytes(), encode(r))?;
        }
        for r in rec.restores.values() {
            self.restores.insert(r.key.as_bytes(), encode(r))?;
        }
        self.flush()
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
        let seq = self.db.generate_id()?;
        let e = JournalEntry {
            seq,
            at,
            op: op.to_string(),
            address: address.to_string(),
            phase,
            detail: detail.to_string(),
        };
        self.journal.insert(seq.to_be_bytes(), encode(&e))?;
        self.flush()?;
        Ok(seq)
    }

    pub fn journal_entries(&self) -> Result<Vec<JournalEntry>, StateError> {
        self.journal
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode("journal", &k, &v)
            })
            .collect()
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }
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
            s.instances.insert("x", b"\x01{not json").unwrap();
            s.flush().unwrap();
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
