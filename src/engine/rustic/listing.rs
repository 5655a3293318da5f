//! A snapshot's listing (restore drills compare a restored tree with it): every entry under
//! the snapshot's root with its type and, for files, size.

use rustic_core::repofile::NodeType;

use super::*;

impl RusticEngine {
    pub(super) fn listing(
        &self,
        repo: &Repo,
        snapshot: &str,
    ) -> Result<Vec<TreeEntry>, EngineError> {
        self.guarded(repo, "listing a snapshot", || {
            let (open, _lock) =
                self.open_locked(repo, Arc::new(NoProgress), lock::Mode::Shared)?;
            // The full index (blob lengths), but no file contents are read.
            let indexed = open.to_indexed().map_err(err(repo))?;
            let snap = find_snapshot(&indexed, repo, snapshot)?;
            let node = indexed
                .node_from_snapshot_and_path(&snap, "")
                .map_err(err(repo))?;
            let mut out = Vec::new();
            for item in indexed
                .ls(&node, &LsOptions::default())
                .map_err(err(repo))?
            {
                let (path, node) = item.map_err(err(repo))?;
                let kind = match node.node_type {
                    NodeType::File => EntryKind::File,
                    NodeType::Dir => EntryKind::Dir,
                    NodeType::Symlink { .. } => EntryKind::Symlink,
                    _ => EntryKind::Other,
                };
                // A stream's file node records no size: its blobs' lengths say it.
                let size = match (kind, node.meta.size, &node.content) {
                    (EntryKind::File, 0, Some(blobs)) => {
                        let mut total = 0u64;
                        for id in blobs {
                            let entry = indexed.get_index_entry(id).map_err(err(repo))?;
                            total += u64::from(entry.data_length());
                        }
                        total
                    }
                    (EntryKind::File, size, _) => size,
                    _ => 0,
                };
                out.push(TreeEntry { path, kind, size });
            }
            Ok(out)
        })
    }
}
