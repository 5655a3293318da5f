//! Local storage: a restic-format repository in a folder of this host.

use super::{Resolved, StorageKind, generated_key_path};
use crate::config::{Config, Storage, StorageLocation};
use crate::engine::Repo;

pub struct Local;

impl StorageKind for Local {
    fn resolve(&self, cfg: &Config, name: &str, storage: &Storage) -> Result<Resolved, String> {
        let StorageLocation::Local { path } = &storage.location else {
            return Err(format!("storage `{name}` is not a local storage"));
        };
        Ok(Resolved {
            repo: Repo::local(
                path.clone(),
                storage
                    .password_file
                    .clone()
                    .unwrap_or_else(|| generated_key_path(cfg, name)),
            ),
            may_generate_key: storage.password_file.is_none(),
        })
    }
}
