//! S3 storage (AWS or an S3-compatible server): a restic-format repository in a bucket,
//! under an optional folder (`path`).

use super::{Resolved, StorageKind};
use crate::config::{Config, Storage, StorageLocation};
use crate::engine::Remote;

pub struct S3;

impl StorageKind for S3 {
    fn resolve(&self, _cfg: &Config, name: &str, storage: &Storage) -> Result<Resolved, String> {
        let StorageLocation::S3 {
            bucket,
            path,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
        } = &storage.location
        else {
            return Err(format!("storage `{name}` is not an S3 storage"));
        };
        let remote = Remote::S3 {
            bucket: bucket.clone(),
            region: region.clone(),
            endpoint: endpoint.clone(),
            prefix: path.clone(),
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        };
        super::external(name, storage, remote)
    }
}
