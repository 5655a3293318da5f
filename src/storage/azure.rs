//! Azure Blob storage: a restic-format repository in a blob container, under an optional
//! folder (`path`).

use super::{Resolved, StorageKind};
use crate::config::{Config, Storage, StorageLocation};
use crate::engine::{Remote, Repo};

pub struct Azure;

impl StorageKind for Azure {
    fn resolve(&self, _cfg: &Config, name: &str, storage: &Storage) -> Result<Resolved, String> {
        let StorageLocation::Azure {
            account,
            container,
            path,
            endpoint,
            access_key,
        } = &storage.location
        else {
            return Err(format!("storage `{name}` is not an Azure storage"));
        };
        let password_file = storage
            .password_file
            .clone()
            .ok_or_else(|| format!("storage `{name}` is external and has no `password_file`"))?;
        let remote = Remote::Azure {
            account: account.clone(),
            container: container.clone(),
            endpoint: endpoint.clone(),
            prefix: path.clone(),
            access_key: access_key.clone(),
        };
        Ok(Resolved {
            repo: Repo {
                path: remote.name().into(),
                password_file,
                remote: Some(remote),
            },
            may_generate_key: false,
        })
    }
}
