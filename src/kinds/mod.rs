//! Instance kinds: the one seam between the executor and a kind of data store (a directory
//! tree, a SQLite file, a PostgreSQL database). The executor talks only to [`Kind`] and
//! [`Target`]; everything specific to a kind lives in its module here.
//!
//! **Adding a kind** is one module implementing [`Kind`] (and a [`Target`] for its restores)
//! plus one line in [`of`]. What each implementation must guarantee:
//! - **`provision` adopts what exists and never changes its contents**; it creates only what
//!   is missing.
//! - **`backup_source` checks that the store is what the kind expects** (a folder, a database
//!   file...) and says so before the engine is called; it never follows a symbolic link to
//!   somewhere else.
//! - **A restore never writes into the store itself**: `open_target` checks, before anything
//!   is written (and before the pre-restore backup), that the store can be replaced
//!   atomically; the engine writes only into what `stage` returns; `commit` swaps it in with
//!   one atomic step; before `commit` the store is untouched, after it the store holds the
//!   restored data, whatever fails next.
//! - **A backup reads the store without a temporary copy when it can**: a database's own
//!   consistent read is streamed into the engine ([`BackupSource::Stream`] from a dump tool,
//!   [`BackupSource::Written`] from a read transaction of this process), unless a read that
//!   long would hold the store's writers (a rollback-mode SQLite database). A temporary copy,
//!   where a kind makes one (SQLite's `.<file>.backplan-backup/`), lives beside the store,
//!   on its filesystem, and is removed
//!   by `backup_finished` in every outcome and by `discard_leftovers` after a crash or an
//!   upgrade.
//! - **`discard` and `discard_leftovers` remove only what this kind's restores created**
//!   (staging places with backplan's own names).
//! - **`store_path` names the place a store occupies** (for the shared-store check), or
//!   `None` for stores that are not on this host's filesystem.
//!
//! The tests every kind must pass are written once, generic over the kind, in
//! `tests/it/kinds.rs`.

pub mod directory;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{Source, SourceKind};
use crate::engine::{StreamSource, WrittenStream};

/// What the engine reads for a backup.
#[derive(Debug, Clone)]
pub enum BackupSource {
    /// The contents of a folder, stored relative to it.
    Tree(PathBuf),
    /// The standard output of a producer process, stored as one file.
    Stream(StreamSource),
    /// What code of this process writes (on a thread of its own), stored as one file.
    Written(WrittenStream),
}

/// Where the engine writes a restore.
pub enum RestoreInto {
    /// An empty folder that receives the snapshot's tree.
    Tree(PathBuf),
    /// A sink that receives the file `name` of a stream backup.
    Stream {
        name: String,
        sink: Box<dyn std::io::Write + Send>,
    },
}

/// One kind of data store.
pub trait Kind: Sync {
    /// Creates the store, or adopts it if it exists: returns `"created"` or `"adopted"`.
    fn provision(&self, source: &Source) -> Result<&'static str, String>;
    /// What the engine reads to back up `instance`, checked to be what the kind expects.
    fn backup_source(&self, source: &Source, instance: &str) -> Result<BackupSource, String>;
    /// Called once the engine is done with what `backup_source` returned, whatever the
    /// outcome: removes a temporary copy the kind made for it (or an older version left), if
    /// any.
    fn backup_finished(&self, _source: &Source, _instance: &str) {}
    /// The versions of the software behind the store (a server's, a dump tool's), asked
    /// right before a backup and kept in its record; [`Target::check_backup`] reads them.
    fn versions(&self, _source: &Source) -> Result<BTreeMap<String, String>, String> {
        Ok(BTreeMap::new())
    }
    /// Opens the store as a restore target, checking that it can be replaced atomically.
    fn open_target(&self, source: &Source) -> Result<Box<dyn Target>, String>;
    /// Removes the staging places interrupted restores left behind; returns a line for each
    /// place removed or that could not be.
    fn discard_leftovers(&self, source: &Source) -> Vec<String>;
    /// The place on this host's filesystem the store occupies, if any.
    fn store_path(&self, source: &Source) -> Option<PathBuf>;
    /// A restore drill's check of a backup restored (as a tree) into the scratch folder
    /// `restored`, beyond the comparison with the snapshot's listing: what was checked, or
    /// what is wrong. Reads only `restored`; never touches the store.
    fn drill_check(&self, _source: &Source, _restored: &std::path::Path) -> Result<String, String> {
        Ok(String::new())
    }
}

/// A store opened for one restore (see [`Kind::open_target`]). `restore_key` names the
/// staging place, so that a restore run again after a crash finds its own.
pub trait Target {
    /// How the store is named in messages (a path, a database).
    fn describe(&self) -> String;
    /// Refuses a store that is, holds or is inside one of `protected` (what it is, where),
    /// compared by identity, not by spelling.
    fn check_apart_from(&self, protected: &[(String, PathBuf)]) -> Result<(), String>;
    /// Refuses, before anything is written, a backup this store cannot take, by the
    /// `versions` recorded when it was made (see [`Kind::versions`]).
    fn check_backup(&self, _versions: &BTreeMap<String, String>) -> Result<(), String> {
        Ok(())
    }
    /// Makes an empty staging place beside the store; the engine restores into it.
    fn stage(&self, restore_key: &str) -> Result<RestoreInto, String>;
    /// Readies the staged data for the swap (metadata, durability), once the engine is done.
    fn prepare(&self, restore_key: &str) -> Result<(), String>;
    /// Swaps the staged data in, atomically. `Ok`: the store holds the restored data.
    fn commit(&self, restore_key: &str) -> Result<(), String>;
    /// After `commit`: makes it durable and removes the old data. An `Err` is a warning: the
    /// store holds the restored data all the same.
    fn finish(&self, restore_key: &str) -> Result<(), String>;
    /// Removes the staging place of a restore that did not reach `commit`.
    fn discard(&self, restore_key: &str);
    /// This target, for staging on another thread while the pre-restore backup of the store
    /// is taken, when the two are apart (the staging place is not what that backup reads) and
    /// gain from running together; the swap still waits for both. `None`: one after the other.
    fn alongside_safety_backup(&self) -> Option<&(dyn Target + Sync)> {
        None
    }
}

/// The implementation of a kind, or why this version has none.
pub fn of(kind: SourceKind) -> Result<&'static dyn Kind, String> {
    match kind {
        SourceKind::Directory => Ok(&directory::Directory),
        SourceKind::Postgres => Ok(&postgres::Postgres),
        SourceKind::Sqlite => Ok(&sqlite::Sqlite),
    }
}
