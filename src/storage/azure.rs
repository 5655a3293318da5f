//! Azure Blob storage: a restic-format repository in a blob container, under an optional
//! folder (`path`).

use super::{Resolved, StorageKind};
use crate::config::{Config, Storage, StorageLocation};
use crate::engine::Remote;

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
        let remote = Remote::Azure {
            account: account.clone(),
            container: container.clone(),
            endpoint: endpoint.clone(),
            prefix: path.clone(),
            access_key: access_key.clone(),
        };
        super::external(name, storage, remote)
    }
}
