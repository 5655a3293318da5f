//! The validated configuration: every default filled in, every path absolute, every value
//! parsed. Only `config::load` builds it, so holding a `Config` means the file was valid.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use super::raw::{InstanceType, SourceKind, StorageKind};
use super::values::{BackupRef, Dur, Percent, Retention, Version};
use crate::diagnostic::Loc;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file as the user named it (used in messages).
    pub file: PathBuf,
    pub daemon: Daemon,
    pub schedule: Schedule,
    /// Always holds `local`.
    pub storages: BTreeMap<String, Storage>,
    pub instances: BTreeMap<String, Instance>,
    pub restores: BTreeMap<String, Restore>,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub daily_at: NaiveTime,
    pub timezone: Tz,
    pub retention: Dur,
    pub keep_last_good: u32,
    pub min_backup_version: Option<Version>,
    pub verify: Percent,
    /// How long a backup removed from the file stays `deleting` (restorable, revivable)
    /// before its data is deleted.
    pub deletion_grace: Dur,
}

/// Where a secret is read from at the moment it is needed. The secret itself is never part
/// of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    Local {
        path: PathBuf,
    },
    Azure {
        account: String,
        container: String,
        endpoint: Option<String>,
        access_key: SecretSource,
    },
    S3 {
        bucket: String,
        region: Option<String>,
        endpoint: Option<String>,
        access_key_id: String,
        secret_access_key: SecretSource,
    },
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub name: String,
    pub location: StorageLocation,
    /// `None`: the key generated into the state dir.
    pub password_file: Option<PathBuf>,
    pub retention: Retention,
    pub max_restore_age: Option<Dur>,
    pub purge_on_delete: bool,
}

impl Storage {
    pub fn kind(&self) -> StorageKind {
        match self.location {
            StorageLocation::Local { .. } => StorageKind::Local,
            StorageLocation::Azure { .. } => StorageKind::Azure,
            StorageLocation::S3 { .. } => StorageKind::S3,
        }
    }
    pub fn is_external(&self) -> bool {
        self.kind() != StorageKind::Local
    }
}

/// Where an instance's data is. Two sources are the same store when they are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Directory {
        path: PathBuf,
    },
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
    },
}

impl Source {
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Directory { .. } => SourceKind::Directory,
            Source::Sqlite { .. } => SourceKind::Sqlite,
            Source::Postgres { .. } => SourceKind::Postgres,
        }
    }
    /// What identifies the store, for messages: a path or a URL.
    pub fn describe(&self) -> String {
        match self {
            Source::Directory { path } => format!("directory {}", path.display()),
            Source::Sqlite { path } => format!("sqlite {}", path.display()),
            Source::Postgres { url, .. } => url.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub kind: InstanceType,
    pub version: Version,
    pub source: Source,
    pub on_update: Vec<String>,
    /// Operators' commands around restores into and backups of this instance (empty: none).
    pub hooks: InstanceHooks,
    /// How long each hook of this instance may run.
    pub hook_timeout: Dur,
    /// directory instances: glob patterns left out of backups.
    pub exclude: Vec<String>,
    pub backups: BTreeMap<String, BackupDecl>,
    /// Where `[instances.<name>]` is written.
    pub loc: Loc,
    pub version_loc: Loc,
    pub source_loc: Loc,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceHooks {
    pub before_restore: Vec<String>,
    pub after_restore: Vec<String>,
    pub before_backup: Vec<String>,
    pub after_backup: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BackupDecl {
    pub key: String,
    pub label: String,
    pub notes: String,
    pub storage: String,
    pub loc: Loc,
    pub storage_loc: Loc,
}

#[derive(Debug, Clone)]
pub struct Restore {
    pub key: String,
    pub from: BackupRef,
    pub to: String,
    pub loc: Loc,
    pub to_loc: Loc,
    pub from_loc: Loc,
}

impl std::fmt::Display for InstanceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstanceType::Production => "production",
            InstanceType::Sandbox => "sandbox",
        })
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Directory => "directory",
            SourceKind::Sqlite => "sqlite",
            SourceKind::Postgres => "postgres",
        })
    }
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageKind::Local => "local",
            StorageKind::Azure => "azure",
            StorageKind::S3 => "s3",
        })
    }
}
