//! The state store. **This is the only module that touches sled.**
//!
//! Trees: `instances` (name → record), `backups` (UUID → record), `restores` (key → record),
//! `journal` (sequence number, big-endian → entry), `journal_by_address` (address, a zero
//! byte, sequence number → nothing: the journal by address, so recovery reads only the
//! entries of what was interrupted; schema 2), `journal_open` (op, a zero byte, address →
//! nothing: the operations whose last entry is not `finished`), `storages` (name → the repository id it
//! uses; a tree added without a schema change, empty in older stores), `drills` (instance →
//! its restore drills, likewise added without a schema change) and `meta`
//! (`schema_version`). Each value
//! is one format byte followed by the record as JSON, so a record can change shape later
//! without guessing. **Every write is flushed to disk before the call returns**, so a state
//! transition that was reported is durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::plan::planner::RecordChanges;
use crate::records::*;

/// The layout this build reads and writes.
pub const SCHEMA_VERSION: u32 = 2;
/// The first byte of every stored record.
const RECORD_FORMAT: u8 = 1;

/// Migrations, in order: `MIGRATIONS[i]` turns schema `i + 1` into `i + 2`; a new layout
/// adds a function here and bumps `SCHEMA_VERSION`.
type Migration = fn(&Store) -> Result<(), StateError>;
const MIGRATIONS: &[Migration] = &[index_journal_by_address];

/// Schema 1 → 2: the `journal_by_address` index of every entry already in the journal.
fn index_journal_by_address(store: &Store) -> Result<(), StateError> {
    store.with(|h| {
        let mut batch = sled::Batch::default();
        for item in h.journal.iter() {
            let (k, v) = item?;
            let e: JournalEntry = decode("journal", &k, &v)?;
            batch.insert(address_key(&e.address, e.seq), sled::IVec::default());
        }
        h.journal_by_address.apply_batch(batch)?;
        h.flush()
    })
}

/// The key of one entry in `journal_by_address`.
fn address_key(address: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(address.len() + 9);
    k.extend_from_slice(address.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// What one [`Store::trim`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub backups: usize,
    pub journal: usize,
}

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
    /// The records in memory (see [`Store::load`]): read from sled at the first `load`, then
    /// changed by every write once sled has it. Also what `status` shows while the store
    /// cannot be read. Held during each write, so a `load` that reads sled again never
    /// misses a write made meanwhile.
    memory: Mutex<Option<Arc<Recorded>>>,
    /// What the writes changed in `memory` since [`Store::take_changes`] (for the daemon's
    /// incremental plan); everything once `memory` is read from sled.
    changes: Mutex<RecordChanges>,
    /// Set by every call that failed: a write may or may not have reached sled, so `memory`
    /// is read from sled again at the next `load`.
    memory_stale: AtomicBool,
    /// Set when the store was opened again after an error (see [`Store::take_reopened`]).
    reopened: AtomicBool,
}

struct Handles {
    db: sled::Db,
    instances: sled::Tree,
    backups: sled::Tree,
    restores: sled::Tree,
    journal: sled::Tree,
    journal_by_address: sled::Tree,
    /// Operations whose last journal entry is not `finished`: op, a zero byte, address →
    /// nothing (added without a schema change; empty in older stores, which wrote no op
    /// that needs it).
    journal_open: sled::Tree,
    storages: sled::Tree,
    meta: sled::Tree,
    /// Restore drills: instance name → its [`DrillRecord`] (added without a schema change,
    /// empty in older stores).
    drills: sled::Tree,
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
        // sled's lock on its files (flock) outlives a dropped `Db` for as long as one of its
        // background threads still holds the files: a store closed a moment ago in this
        // process can refuse a new open for that moment (seen in a unit test that reopens
        // at once). So a lock is tried again for up to 3 s before it is reported; another
        // process's lock (a running daemon) is reported after those 3 s.
        let open = || {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                match open() {
                    Err(sled::Error::Io(ref io))
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            && std::time::Instant::now() < until =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    other => return other,
                }
            }
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
            journal_by_address: db.open_tree("journal_by_address")?,
            journal_open: db.open_tree("journal_open")?,
            storages: db.open_tree("storages")?,
            meta: db.open_tree("meta")?,
            drills: db.open_tree("drills")?,
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
            memory: Mutex::new(None),
            changes: Mutex::new(RecordChanges::everything()),
            memory_stale: AtomicBool::new(false),
            reopened: AtomicBool::new(false),
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
    /// A sled error drops the handles (see the `handles` field); any error has the records in
    /// memory read again at the next `load`.
    fn with<T>(&self, f: impl FnOnce(&Handles) -> Result<T, StateError>) -> Result<T, StateError> {
        let result = self.open_handles().and_then(|h| {
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
        });
        if result.is_err() {
            self.memory_stale.store(true, SeqCst);
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
        self.reopened.store(true, SeqCst);
        *slot = Some(h.clone());
        Ok(h)
    }

    /// Whether the store was opened again after an error since the last call: the operation
    /// that failed may have left a record `running`, to resolve as at a start.
    pub fn take_reopened(&self) -> bool {
        self.reopened.swap(false, SeqCst)
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

    /// Everything recorded, for the planner, the daemon's wakes and the status commands: the
    /// records in memory, shared (a write while a caller still holds them copies them once).
    /// Sled is read at the first call and after any failed call; otherwise this costs nothing.
    pub fn load(&self) -> Result<Arc<Recorded>, StateError> {
        let mut memory = self.memory();
        self.loaded(&mut memory)
    }

    /// [`Store::load`], and what was written since the last call (a first call, and one
    /// after the records were read from sled again: everything), taken together so that the
    /// records returned hold exactly those writes. One caller: the daemon's loop (its
    /// incremental plan, `plan::planner::PlanCache`).
    pub fn load_changes(&self) -> Result<(Arc<Recorded>, RecordChanges), StateError> {
        let mut memory = self.memory();
        let rec = self.loaded(&mut memory)?;
        Ok((rec, std::mem::take(&mut *self.changes())))
    }

    fn loaded(
        &self,
        memory: &mut MutexGuard<'_, Option<Arc<Recorded>>>,
    ) -> Result<Arc<Recorded>, StateError> {
        if memory.is_none() || self.memory_stale.swap(false, SeqCst) {
            // A failure sets `memory_stale` again (in `with`): the next call reads again.
            **memory = Some(Arc::new(self.read_all()?));
            self.changes().everything = true;
        }
        Ok(memory.clone().expect("read above"))
    }

    /// Every record read from sled, past the records in memory: what [`Store::load`] costs
    /// when it reads (the first time, after an error). `state::read` and benchmarks use it.
    pub fn read_all(&self) -> Result<Recorded, StateError> {
        self.with(|h| {
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
            for item in h.drills.iter() {
                let (k, v) = item?;
                let r: DrillRecord = decode("drills", &k, &v)?;
                rec.drills.insert(r.instance.clone(), r);
            }
            Ok(rec)
        })
    }

    /// The records in memory as they are, even when the store cannot be read now (for
    /// answers while the disk is full); `None` before the first [`Store::load`].
    pub fn last_read(&self) -> Option<Arc<Recorded>> {
        self.memory().clone()
    }

    fn memory(&self) -> MutexGuard<'_, Option<Arc<Recorded>>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changes(&self) -> MutexGuard<'_, RecordChanges> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write of records: to sled, flushed, then (only once that succeeded) the same change
    /// to the records in memory, if they were read.
    fn write(
        &self,
        to_sled: impl FnOnce(&Handles) -> Result<(), StateError>,
        to_memory: impl FnOnce(&mut Recorded),
    ) -> Result<(), StateError> {
        let mut memory = self.memory();
        self.with(|h| {
            to_sled(h)?;
            crate::failpoint!("state.written-unflushed");
            h.flush()
        })?;
        if let Some(rec) = memory.as_mut() {
            to_memory(Arc::make_mut(rec));
        }
        Ok(())
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
        Ok(self
            .load()?
            .backups
            .values()
            .any(|b| b.storage == storage && b.snapshot_id.is_some()))
    }

    pub fn remove_restore(&self, key: &str) -> Result<(), StateError> {
        self.write(
            |h| {
                h.restores.remove(key.as_bytes())?;
                Ok(())
            },
            |rec| {
                rec.restores.remove(key);
            },
        )
    }

    pub fn put_instance(&self, r: &InstanceRecord) -> Result<(), StateError> {
        self.write(
            |h| {
                h.instances.insert(r.name.as_bytes(), encode(r))?;
                Ok(())
            },
            |rec| {
                rec.instances.insert(r.name.clone(), r.clone());
                self.changes().instances.insert(r.name.clone());
            },
        )
    }

    pub fn remove_instance(&self, name: &str) -> Result<(), StateError> {
        self.write(
            |h| {
                h.instances.remove(name.as_bytes())?;
                Ok(())
            },
            |rec| {
                rec.instances.remove(name);
                self.changes().instances.insert(name.to_string());
            },
        )
    }

    pub fn put_backup(&self, r: &BackupRecord) -> Result<(), StateError> {
        self.write(
            |h| {
                h.backups.insert(r.id.as_bytes(), encode(r))?;
                Ok(())
            },
            |rec| {
                let old = rec.backups.insert(r.id, r.clone());
                let mut changes = self.changes();
                changes.backups.insert(r.id, r.instance.clone());
                if let Some(old) = old.filter(|o| o.instance != r.instance) {
                    changes.instances.insert(old.instance);
                }
            },
        )
    }

    pub fn remove_backup(&self, id: Uuid) -> Result<(), StateError> {
        self.write(
            |h| {
                h.backups.remove(id.as_bytes())?;
                Ok(())
            },
            |rec| {
                if let Some(old) = rec.backups.remove(&id) {
                    self.changes().backups.insert(id, old.instance);
                }
            },
        )
    }

    pub fn put_restore(&self, r: &RestoreRecord) -> Result<(), StateError> {
        self.write(
            |h| {
                h.restores.insert(r.key.as_bytes(), encode(r))?;
                Ok(())
            },
            |rec| {
                rec.restores.insert(r.key.clone(), r.clone());
            },
        )
    }

    pub fn get_drill(&self, instance: &str) -> Result<Option<DrillRecord>, StateError> {
        self.with(|h| {
            h.drills
                .get(instance.as_bytes())?
                .map(|v| decode("drills", instance.as_bytes(), &v))
                .transpose()
        })
    }

    /// Records the restore drills of an instance (its record replaced).
    pub fn put_drill(&self, r: &DrillRecord) -> Result<(), StateError> {
        self.write(
            |h| {
                h.drills.insert(r.instance.as_bytes(), encode(r))?;
                Ok(())
            },
            |rec| {
                rec.drills.insert(r.instance.clone(), r.clone());
                self.changes().instances.insert(r.instance.clone());
            },
        )
    }

    /// Writes everything in `rec` (used to import fixtures and by tests).
    pub fn put_all(&self, all: &Recorded) -> Result<(), StateError> {
        self.write(
            |h| {
                for r in all.instances.values() {
                    h.instances.insert(r.name.as_bytes(), encode(r))?;
                }
                for r in all.backups.values() {
                    h.backups.insert(r.id.as_bytes(), encode(r))?;
                }
                for r in all.restores.values() {
                    h.restores.insert(r.key.as_bytes(), encode(r))?;
                }
                for r in all.drills.values() {
                    h.drills.insert(r.instance.as_bytes(), encode(r))?;
                }
                Ok(())
            },
            |rec| {
                self.changes().everything = true;
                rec.instances.extend(all.instances.clone());
                rec.backups.extend(all.backups.clone());
                rec.restores.extend(all.restores.clone());
                rec.drills.extend(all.drills.clone());
            },
        )
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
            // The index first: a crash between the two leaves an index key without its
            // entry (skipped on reading), never an entry recovery cannot find.
            h.journal_by_address
                .insert(address_key(address, seq), sled::IVec::default())?;
            let open = [op.as_bytes(), &[0], address.as_bytes()].concat();
            if phase == Phase::Finished {
                h.journal_open.remove(open)?;
            } else {
                h.journal_open.insert(open, sled::IVec::default())?;
            }
            h.journal.insert(seq.to_be_bytes(), encode(&e))?;
            h.flush()?;
            Ok(seq)
        })
    }

    /// The journal entries of one address, oldest first, through the address index: what
    /// recovery reads for an interrupted operation, whatever the size of the journal.
    pub fn journal_at(&self, address: &str) -> Result<Vec<JournalEntry>, StateError> {
        self.with(|h| {
            let mut prefix = address.as_bytes().to_vec();
            prefix.push(0);
            let mut out = Vec::new();
            for item in h.journal_by_address.scan_prefix(&prefix) {
                let (k, _) = item?;
                let seq = &k[prefix.len()..];
                if let Some(v) = h.journal.get(seq)? {
                    out.push(decode("journal", seq, &v)?);
                }
            }
            Ok(out)
        })
    }

    /// The addresses of the operations `op` whose last journal entry is not `finished`
    /// (started, or failed part-way): what recovery looks at, without reading the journal.
    pub fn journal_open(&self, op: &str) -> Result<Vec<String>, StateError> {
        self.with(|h| {
            let prefix = [op.as_bytes(), &[0]].concat();
            let mut out = Vec::new();
            for item in h.journal_open.scan_prefix(&prefix) {
                let (k, _) = item?;
                out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
            }
            Ok(out)
        })
    }

    /// Removes the backup records `backups` (tombstones the planner found past their
    /// retention, [`crate::plan::planner::trimmable`]) and the journal entries written before
    /// `journal_before`, except those of the addresses in `keep` (operations under way or
    /// interrupted). The journal is read in order and left at its first entry written at or
    /// after `journal_before` (a test clock moved back leaves the rest for a later trim).
    /// One flush for all of it.
    pub fn trim(
        &self,
        backups: &[uuid::Uuid],
        journal_before: DateTime<Utc>,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<Trimmed, StateError> {
        let mut journal = 0;
        self.write(
            |h| {
                let mut records = sled::Batch::default();
                for id in backups {
                    records.remove(&id.as_bytes()[..]);
                }
                let mut entries = sled::Batch::default();
                let mut index = sled::Batch::default();
                for item in h.journal.iter() {
                    let (k, v) = item?;
                    let e: JournalEntry = decode("journal", &k, &v)?;
                    if e.at >= journal_before {
                        break;
                    }
                    if keep.contains(&e.address) {
                        continue;
                    }
                    index.remove(address_key(&e.address, e.seq));
                    entries.remove(k);
                    journal += 1;
                }
                h.backups.apply_batch(records)?;
                h.journal.apply_batch(entries)?;
                h.journal_by_address.apply_batch(index)?;
                Ok(())
            },
            |rec| {
                let mut changes = self.changes();
                for id in backups {
                    if let Some(old) = rec.backups.remove(id) {
                        changes.backups.insert(*id, old.instance);
                    }
                }
            },
        )?;
        Ok(Trimmed {
            backups: backups.len(),
            journal,
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
    Store::open(dir)?.read_all()
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

    fn backup(instance: &str, n: u128) -> BackupRecord {
        BackupRecord {
            id: Uuid::from_u128(n),
            instance: instance.into(),
            source_kind: crate::config::SourceKind::Directory,
            kind: BackupKind::OnDemand,
            key: Some(format!("b{n}")),
            created_by: CreatedBy::User,
            label: format!("backup {n}"),
            notes: String::new(),
            storage: "local".into(),
            status: BackupStatus::Completed,
            created_at: Utc::now(),
            completed_at: Some(Utc::now()),
            expires_at: None,
            size_bytes: None,
            snapshot_id: Some(format!("{n:064x}")),
            error: None,
            attempts: 1,
            failed_at: None,
            date: None,
            version: None,
            delete_at: None,
            status_before_delete: None,
            versions: Default::default(),
            unreadable: None,
        }
    }

    fn restore(key: &str) -> RestoreRecord {
        RestoreRecord {
            key: key.into(),
            from: "a.b1".into(),
            backup_id: Some(Uuid::from_u128(1)),
            to: "b".into(),
            status: RestoreStatus::Completed,
            requested_at: Utc::now(),
            completed_at: Some(Utc::now()),
            safety_backup: None,
            error: None,
        }
    }

    /// The records in memory, checked against what sled holds.
    fn in_step(store: &Store) -> Arc<Recorded> {
        let rec = store.load().unwrap();
        assert_eq!(*rec, store.read_all().unwrap(), "memory and sled agree");
        rec
    }

    /// What the daemon's incremental plan is told: every write to the records in memory,
    /// by instance and backup id; everything at the first load and after sled is read again.
    #[test]
    fn load_changes_names_every_write_since_the_last_call() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.put_backup(&backup("a", 1)).unwrap();
        let (rec, changed) = store.load_changes().unwrap();
        assert!(changed.everything && rec.backups.len() == 1);
        let (_, changed) = store.load_changes().unwrap();
        assert!(changed.is_empty(), "{changed:?}");
        store.put_backup(&backup("a", 2)).unwrap();
        store.remove_backup(Uuid::from_u128(1)).unwrap();
        store.put_instance(&instance("b")).unwrap();
        store
            .put_drill(&DrillRecord {
                instance: "c".into(),
                runs: Vec::new(),
                last_success_at: None,
                failures_total: 0,
            })
            .unwrap();
        store.put_backup(&backup("d", 3)).unwrap();
        store
            .trim(
                &[Uuid::from_u128(3)],
                Utc::now() - chrono::Duration::days(1),
                &Default::default(),
            )
            .unwrap();
        store.put_restore(&restore("r")).unwrap();
        let (rec, changed) = store.load_changes().unwrap();
        assert!(!changed.everything);
        assert_eq!(changed.instances, ["b".to_string(), "c".to_string()].into());
        assert_eq!(
            changed.backups,
            [(1, "a"), (2, "a"), (3, "d")]
                .map(|(n, i)| (Uuid::from_u128(n), i.to_string()))
                .into()
        );
        assert_eq!(rec.backups.len(), 1);
        // A failed call: sled is read again at the next load, which says so.
        store.memory_stale.store(true, SeqCst);
        let (_, changed) = store.load_changes().unwrap();
        assert!(changed.everything);
    }

    #[test]
    fn the_records_in_memory_follow_every_write() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut first = Recorded::default();
        first.instances.insert("a".into(), instance("a"));
        first.backups.insert(Uuid::from_u128(1), backup("a", 1));
        store.put_all(&first).unwrap();
        let before = in_step(&store);
        assert_eq!(*before, first);
        // Read once: a second load is the same records, not a new read of sled.
        assert!(Arc::ptr_eq(&before, &store.load().unwrap()));

        store.put_instance(&instance("b")).unwrap();
        assert!(in_step(&store).instances.contains_key("b"));
        store.put_backup(&backup("b", 2)).unwrap();
        assert!(in_step(&store).backups.contains_key(&Uuid::from_u128(2)));
        let mut changed = backup("a", 1);
        changed.label = "relabelled".into();
        store.put_backup(&changed).unwrap();
        assert_eq!(in_step(&store).backups[&changed.id], changed);
        store.put_restore(&restore("r1")).unwrap();
        assert!(in_step(&store).restores.contains_key("r1"));

        store.remove_restore("r1").unwrap();
        assert!(!in_step(&store).restores.contains_key("r1"));
        store.remove_backup(Uuid::from_u128(2)).unwrap();
        assert!(!in_step(&store).backups.contains_key(&Uuid::from_u128(2)));
        store.remove_instance("b").unwrap();
        let after = in_step(&store);
        assert!(!after.instances.contains_key("b"));
        assert_eq!(after.backups[&changed.id].label, "relabelled");

        // What a caller held is its own: writes copied it rather than changing it.
        assert_eq!(*before, first);
    }

    #[test]
    fn a_failed_write_leaves_memory_unchanged_and_it_is_read_again_after_the_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.put_instance(&instance("a")).unwrap();
        let before = store.load().unwrap();
        // A write whose sled part fails after the data reached the disk (the error of a flush
        // that did write, say): sled holds `written`, the caller was told it failed.
        let e = store
            .write(
                |h| {
                    h.instances
                        .insert("written", encode(&instance("written")))?;
                    h.flush()?;
                    Err(StateError::Sled(sled::Error::Unsupported(
                        "injected".into(),
                    )))
                },
                |rec| {
                    rec.instances.insert("never".into(), instance("never"));
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        let memory = store.last_read().unwrap();
        assert_eq!(*memory, *before, "a failed write does not change memory");
        assert!(!memory.instances.contains_key("never"));

        // The store is opened again and the records read from sled, not from memory.
        let after = in_step(&store);
        assert!(store.take_reopened(), "the store was opened again");
        assert!(after.instances.contains_key("written"), "{after:?}");
        assert!(!after.instances.contains_key("never"));
        // And memory follows writes again from there.
        store.put_instance(&instance("c")).unwrap();
        assert!(Arc::ptr_eq(
            &store.load().unwrap(),
            &store.last_read().unwrap()
        ));
        assert!(in_step(&store).instances.contains_key("c"));
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
        let (failed, e) = (0..10_000)
            .find_map(|i| {
                (store.put_instance(&instance(&format!("full{i}"))))
                    .err()
                    .map(|e| (i, e))
            })
            .expect("writes fail on a full disk");
        assert!(e.to_string().contains("No space left on device"), "{e}");
        for i in 0..3 {
            let e = store.put_instance(&instance(&format!("still-full{i}")));
            assert!(e.is_err(), "the disk is still full");
        }
        // What was read last, with every write that succeeded and none that failed, stays
        // available (for `status`).
        let e = store.load().unwrap_err();
        assert!(e.to_string().contains("No space left on device"), "{e}");
        let memory = store.last_read().unwrap();
        assert_eq!(memory.instances.len(), 40 + failed);
        assert!(!memory.instances.contains_key(&format!("full{failed}")));
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
        assert_eq!(*rec, store.read_all().unwrap(), "memory was read again");
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

    /// A store written by the code of schema 1 (`backplan apply` of the file beside it: an
    /// instance adopted, one on-demand backup) is migrated at open: its journal is indexed
    /// by address, nothing is lost, and new entries are indexed as they are written.
    #[test]
    fn a_schema_1_store_is_migrated_and_its_journal_indexed() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1");
        let tmp = tempfile::tempdir().unwrap();
        for f in ["conf", "db"] {
            std::fs::copy(fixture.join(f), tmp.path().join(f)).unwrap();
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(2));
        let all = store.journal_entries().unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
        let backup = store.journal_at("backup.app/first").unwrap();
        let phases: Vec<Phase> = backup.iter().map(|e| e.phase).collect();
        assert_eq!(phases, [Phase::Started, Phase::Finished]);
        assert_eq!(store.journal_at("instance.app").unwrap().len(), 1);
        assert!(
            store.journal_at("backup.app").unwrap().is_empty(),
            "a prefix is not an address"
        );
        let rec = store.read_all().unwrap();
        assert_eq!(rec.instances.len(), 1);
        assert_eq!(rec.backups.len(), 1);
        store
            .journal(Utc::now(), "backup", "backup.app/first", Phase::Started, "")
            .unwrap();
        assert_eq!(store.journal_at("backup.app/first").unwrap().len(), 3);
        drop(store);
        // Opened again: already at schema 2, nothing indexed twice.
        let store = reopen(tmp.path());
        assert_eq!(store.journal_at("backup.app/first").unwrap().len(), 3);
    }

    /// `Store::open`, waiting for sled's threads of a store just dropped to let go.
    fn reopen(dir: &Path) -> Store {
        let start = std::time::Instant::now();
        loop {
            match Store::open(dir) {
                Err(StateError::Locked { .. })
                    if start.elapsed() < std::time::Duration::from_secs(10) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
    }

    #[test]
    fn trim_removes_what_it_is_given_and_old_journal_entries_but_kept_addresses() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut all = Recorded::default();
        for n in 1..=4 {
            all.backups.insert(Uuid::from_u128(n), backup("a", n));
        }
        store.put_all(&all).unwrap();
        let t0 = Utc::now() - chrono::Duration::days(40);
        let at = |d: i64| t0 + chrono::Duration::days(d);
        store
            .journal(at(0), "backup", "backup.a/b1", Phase::Started, "")
            .unwrap();
        store
            .journal(at(0), "restore", "restore.r1", Phase::Started, "")
            .unwrap();
        store
            .journal(at(1), "backup", "backup.a/b1", Phase::Finished, "")
            .unwrap();
        store
            .journal(at(1), "swap", "restore.r1", Phase::Finished, "")
            .unwrap();
        store
            .journal(at(35), "backup", "backup.a/b2", Phase::Started, "")
            .unwrap();
        store
            .journal(at(20), "backup", "backup.a/b1", Phase::Started, "")
            .unwrap();
        let keep = ["restore.r1".to_string()].into();
        let t = store
            .trim(&[Uuid::from_u128(1), Uuid::from_u128(2)], at(10), &keep)
            .unwrap();
        assert_eq!(
            t,
            Trimmed {
                backups: 2,
                journal: 2
            }
        );
        let rec = in_step(&store);
        let mut left: Vec<u128> = rec.backups.keys().map(|id| id.as_u128()).collect();
        left.sort();
        assert_eq!(left, [3, 4]);
        // The two old entries of backup.a/b1 went; restore.r1 is kept whatever its age; the
        // journal stops at its first entry newer than the cut (the later, older one stays).
        let j: Vec<(String, Phase)> = store
            .journal_entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.address, e.phase))
            .collect();
        assert_eq!(
            j,
            [
                ("restore.r1".into(), Phase::Started),
                ("restore.r1".into(), Phase::Finished),
                ("backup.a/b2".into(), Phase::Started),
                ("backup.a/b1".into(), Phase::Started),
            ]
        );
        assert_eq!(store.journal_at("restore.r1").unwrap().len(), 2);
        assert_eq!(
            store.journal_at("backup.a/b1").unwrap().len(),
            1,
            "the index follows"
        );
        let keys = store.with(|h| Ok(h.journal_by_address.len())).unwrap();
        assert_eq!(keys, 4, "no index key left without its entry");
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
