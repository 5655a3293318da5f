//! The gate every repository write of a locked operation goes through: rustic's backend
//! wrapped so that the first write or remove waits for the second look of the operation's
//! restic lock (`lock.rs`, [`Settle::pass`]), and none happens when that look finds a
//! conflicting lock, or before the lock is taken at all.
//!
//! The operation's read-only work (opening the repository, reading the index and the parent's
//! trees, walking and chunking the source) starts as soon as its lock file landed, and runs
//! during restic's 200 ms settle instead of after it; lock.rs's module doc says why that is
//! safe.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

use super::lock::Settle;

/// What a handle's writes wait for, and where they went.
#[derive(Default)]
pub(super) struct Gate {
    /// The second look; set once the operation's lock is taken.
    pub(super) settle: OnceLock<Arc<Settle>>,
    /// The repository's folders that got or lost a file (`data/ab`, `index`, `snapshots`,
    /// ...): only those need syncing before the operation reports success.
    touched: Mutex<BTreeSet<String>>,
}

impl Gate {
    fn touch(&self, tpe: FileType, id: &Id) {
        let folder = match tpe {
            FileType::Pack => format!("{}/{}", tpe.dirname(), &id.to_hex()[..2]),
            _ => tpe.dirname().to_string(),
        };
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.insert(folder);
    }

    /// The folders written or removed into so far.
    pub(super) fn touched(&self) -> Vec<String> {
        let touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.iter().cloned().collect()
    }
}

/// A repository backend whose writes and removes pass the gate first; reads go straight
/// through.
pub(super) struct Gated {
    pub(super) inner: Arc<dyn WriteBackend>,
    pub(super) gate: Arc<Gate>,
}

impl Gated {
    fn pass(&self, doing: &str) -> RusticResult<()> {
        let refused = |why: String| {
            RusticError::new(ErrorKind::Backend, "{problem}").attach_context(
                "problem",
                format!("not {doing}: {why}; nothing was written to the repository"),
            )
        };
        match self.gate.settle.get() {
            None => Err(refused(
                "the repository lock is not taken yet (a defect of backplan)".into(),
            )),
            Some(settle) => settle
                .pass()
                .map_err(|holder| refused(format!("the repository is locked by {holder}"))),
        }
    }
}

impl ReadBackend for Gated {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }
    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        self.inner.warm_up(tpe, id)
    }
}

impl WriteBackend for Gated {
    fn create(&self) -> RusticResult<()> {
        self.pass("creating the repository")?;
        self.inner.create()
    }
    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        self.pass(&format!("writing {}/{id}", tpe.dirname()))?;
        self.gate.touch(tpe, id);
        self.inner.write_bytes(tpe, id, cacheable, content)
    }
    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.pass(&format!("removing {}/{id}", tpe.dirname()))?;
        self.gate.touch(tpe, id);
        self.inner.remove(tpe, id, cacheable)
    }
}
