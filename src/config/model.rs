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
    pub notify: Notify,
}

/// `[notify]`: where the daemon sends its terminal events (all empty: nowhere). The URLs are
/// secrets, read from their files when an event is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// Run for every event, the event's JSON on stdin (empty: none).
    pub command: Vec<String>,
    pub webhook_url_file: Option<PathBuf>,
    pub ping_url_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Where the metrics and the status page are served (`None`: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
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
    /// The storage of system backups (daily, pre-update, pre-restore).
    pub storage: String,
    /// How often each instance gets a restore drill (`None`: off; an instance may say
    /// otherwise, see [`Instance::drill`]).
    pub drill: Option<Dur>,
    /// The scratch folder drills restore into (`<state_dir>/drills` by default); never an
    /// instance's path (validation refuses one that is, holds or is inside one).
    pub drill_dir: PathBuf,
}

/// Where a secret is read from at the moment it is needed. The secret itself is never part
/// of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
        /// The repository's folder inside the container (`""`: its top).
        path: String,
        endpoint: Option<String>,
        access_key: SecretSource,
    },
    S3 {
        bucket: String,
        /// The repository's folder inside the bucket (`""`: its top).
        path: String,
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
    /// Whether restore drills read backups back from here (default: local only, since a
    /// cloud charges for egress).
    pub drill: bool,
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

/// Where an instance's data is. Two sources are the same store when their [`Source::identity`]
/// is the same.
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
        /// The folder of the client tools (`pg_dump`, `pg_restore`, `psql`); `None`: `PATH`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bin_dir: Option<PathBuf>,
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

    /// What identifies the store itself, not how it is reached: a path, or for a database
    /// its host (`localhost` when none: the local socket), port (5432 when none) and name.
    /// The user, the password file and the URL's options are credentials and settings: a
    /// change of them is the same store.
    pub fn identity(&self) -> String {
        match self {
            Source::Directory { path } => format!("directory {}", path.display()),
            Source::Sqlite { path } => format!("sqlite {}", path.display()),
            Source::Postgres { url, .. } => postgres_identity(url),
        }
    }
}

/// `postgres://host:port/database` of a PostgreSQL URL, without user, password and options,
/// with the defaults filled in and the name decoded; the URL itself when it cannot be read
/// (validation refuses such a URL).
fn postgres_identity(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return url.to_string();
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // `[::1]:5433`, `host:5433`, `host`, or nothing.
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p),
        _ => (hostport, ""),
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let port = if port.is_empty() { "5432" } else { port };
    let db = percent_decode(db).unwrap_or_else(|| db.to_string());
    format!("postgres://{host}:{port}/{db}")
}

/// `%XX` escapes of a URL part decoded (`None` for a bad escape or bytes that are not UTF-8).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    fn pg(url: &str, password_file: Option<&str>) -> Source {
        Source::Postgres {
            url: url.into(),
            password_file: password_file.map(PathBuf::from),
            bin_dir: None,
        }
    }

    #[test]
    fn a_database_is_its_host_port_and_name_not_its_credentials() {
        let a = pg("postgres://app@localhost/shop", Some("/etc/a"));
        for same in [
            pg("postgres://other@localhost:5432/shop", None),
            pg(
                "postgresql://localhost/shop?sslmode=require",
                Some("/run/b"),
            ),
            pg("postgres:///shop", None),
            pg("postgres://app@LocalHost/sh%6Fp", None),
        ] {
            assert_eq!(a.identity(), same.identity(), "{same:?}");
        }
        for other in [
            pg("postgres://app@localhost:5433/shop", None),
            pg("postgres://app@db.example/shop", None),
            pg("postgres://app@localhost/shop2", None),
        ] {
            assert_ne!(a.identity(), other.identity(), "{other:?}");
        }
        assert_eq!(
            pg("postgres://u@[::1]:5433/d", None).identity(),
            "postgres://[::1]:5433/d"
        );
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
    /// How often this instance gets a restore drill: its own `drill`, else the schedule's
    /// (`None`: never).
    pub drill: Option<Dur>,
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
