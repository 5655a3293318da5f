//! Storages: the seam between a `[storage.*]` table and the repository the engine opens.
//! Each kind of storage resolves its table into an engine [`Repo`] (location, credentials,
//! key); nothing else in the program looks at a storage's location.
//!
//! **Adding a storage kind** is one module implementing [`StorageKind`] plus one line in
//! [`of`]. What each implementation must guarantee:
//! - **`resolve` does no I/O and creates nothing**: whether the repository exists, is the one
//!   recorded, and may be created is decided by the executor (a repository that was there is
//!   never silently re-created).
//! - **Credentials are only ever read from where the file says** (`*_file`, `*_env`,
//!   `$CREDENTIALS_DIRECTORY`), never taken from the file itself.
//! - **A generated key is allowed only where losing the host cannot lose it with the data**:
//!   `may_generate_key` is true for local storage without a `password_file` only.

pub mod azure;
pub mod local;
pub mod s3;

use std::path::PathBuf;

use crate::config::{Config, Storage, StorageLocation};
use crate::engine::Repo;

/// A storage resolved for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub repo: Repo,
    /// backplan may generate the key file when it is missing (and the repository is new).
    pub may_generate_key: bool,
}

/// An external storage's repository: at `remote`, opened with the storage's `password_file`
/// (required: a key generated on this host would be lost with it).
fn external(
    name: &str,
    storage: &Storage,
    remote: crate::engine::Remote,
) -> Result<Resolved, String> {
    let password_file = storage
        .password_file
        .clone()
        .ok_or_else(|| format!("storage `{name}` is external and has no `password_file`"))?;
    Ok(Resolved {
        repo: Repo {
            path: remote.name().into(),
            password_file,
            remote: Some(remote),
        },
        may_generate_key: false,
    })
}

/// One kind of storage.
pub trait StorageKind: Sync {
    fn resolve(&self, cfg: &Config, name: &str, storage: &Storage) -> Result<Resolved, String>;
}

/// The implementation of a storage's kind, or why this version has none.
pub fn of(storage: &Storage) -> Result<&'static dyn StorageKind, String> {
    match storage.location {
        StorageLocation::Local { .. } => Ok(&local::Local),
        StorageLocation::Azure { .. } => Ok(&azure::Azure),
        StorageLocation::S3 { .. } => Ok(&s3::S3),
    }
}

/// Resolves the storage `name` of the file.
pub fn resolve(cfg: &Config, name: &str) -> Result<Resolved, String> {
    let storage = cfg
        .storages
        .get(name)
        .ok_or_else(|| format!("storage `{name}` is not declared in the file"))?;
    of(storage)?.resolve(cfg, name, storage)
}

/// Where backplan keeps the key it generated for a storage without `password_file`.
pub fn generated_key_path(cfg: &Config, storage: &str) -> PathBuf {
    cfg.daemon
        .state_dir
        .join("keys")
        .join(format!("{storage}.key"))
}

/// The paths of backplan's own that no instance may reach: each local repository and each
/// key file (the state folder is added by the caller).
pub fn own_paths(cfg: &Config) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (name, s) in &cfg.storages {
        if let StorageLocation::Local { path } = &s.location {
            out.push((format!("the repository of storage `{name}`"), path.clone()));
        }
        let key = s
            .password_file
            .clone()
            .unwrap_or_else(|| generated_key_path(cfg, name));
        out.push((format!("the key file of storage `{name}`"), key));
    }
    out
}

/// What a storage's kind is called for operators (the product says "Azure Storage").
pub fn kind_name(storage: &Storage) -> &'static str {
    match storage.location {
        StorageLocation::Local { .. } => "local",
        StorageLocation::Azure { .. } => "Azure Storage",
        StorageLocation::S3 { .. } => "S3",
    }
}

/// Where a storage's repository is, in words: its kind and the location inside it.
pub fn describe(storage: &Storage) -> String {
    let kind = kind_name(storage);
    match &storage.location {
        StorageLocation::Local { path } => format!("{kind}, {}", path.display()),
        StorageLocation::Azure {
            account,
            container,
            path,
            ..
        } => format!("{kind}, account `{account}`, container `{container}`, folder `/{path}`"),
        StorageLocation::S3 { bucket, path, .. } => {
            format!("{kind}, bucket `{bucket}`, folder `/{path}`")
        }
    }
}
