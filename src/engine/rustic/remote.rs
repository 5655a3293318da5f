//! The repository backend for object stores (Azure Blob, S3): rustic_core's `ReadBackend` and
//! `WriteBackend` on the `opendal` crate, built with only its `azblob` and `s3` services
//! (rustic_backend's `opendal` feature would build some 25). The layout is restic's:
//! `config`, `keys/<id>`, `snapshots/<id>`, `index/<id>`, `data/<2 hex>/<id>`, under the
//! storage's folder.
//!
//! Guards:
//! - OpenDAL's blocking operator runs its requests on a runtime of its own (one per process,
//!   started here); the calls come from the engine's own threads, never from an async task
//!   (`block_on` inside a runtime panics).
//! - Credentials are read from their file or variable when the backend is built (each
//!   operation), never kept; a missing or empty one is an error naming where it was looked
//!   for, before any request.
//! - The S3 service reads no AWS profile, environment or instance metadata: only what the
//!   file names.
//! - Requests time out (connect 15 s, no byte of the answer for 120 s, 10 minutes in all) and
//!   temporary failures are retried (4 times, with back-off of 1, 2, 4, 8 s): a dead or
//!   stalled endpoint fails an operation within about 11 minutes (a trickling one within 51),
//!   it does not hang it.
//! - Object stores need no folders: creating a repository writes no placeholder objects.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::RetryLayer;
use opendal::options::{ListOptions, ReadOptions};
use opendal::{HttpTransporter, OperationContext};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

use crate::engine::{EngineError, Remote, SecretSource};

/// The runtime OpenDAL's blocking operator runs its requests on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, EngineError> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("object-store")
        .enable_all()
        .build()
        .map_err(|source| EngineError::Io {
            op: "starting the object store's runtime",
            source,
        })?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The HTTP client: rustls with ring (the only TLS provider built), the platform's roots.
fn transport() -> Result<HttpTransporter, EngineError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(HttpTransporter::new(
            opendal_http_transport_reqwest::ReqwestTransport::new(c.clone()),
        ));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (connect, read, whole) = timeouts();
    let client = reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(read)
        .timeout(whole)
        .build()
        .map_err(|e| EngineError::Remote {
            repo: "object store".into(),
            message: format!("cannot set up the HTTP client: {e}"),
        })?;
    let client = CLIENT.get_or_init(|| client).clone();
    Ok(HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(client),
    ))
}

/// The bounds of one request: to connect, without a byte of the answer, and in all (a pack
/// upload to an endpoint that takes the bytes ever more slowly has no other bound). Debug
/// builds only: `BACKPLAN_TEST_STORAGE_TIMEOUT` (seconds) sets the first two and thrice it
/// the third, so that tests of a hung storage take seconds, not minutes.
fn timeouts() -> (Duration, Duration, Duration) {
    #[cfg(debug_assertions)]
    if let Some(s) = std::env::var("BACKPLAN_TEST_STORAGE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let s = Duration::from_secs(s);
        return (s, s, 3 * s);
    }
    (
        Duration::from_secs(15),
        Duration::from_secs(120),
        REQUEST_TIMEOUT,
    )
}

/// A request that takes longer is stuck: a 100 MiB pack at 170 KiB/s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Reads a credential from where the file says it is.
pub(super) fn read_secret(source: &SecretSource, what: &str) -> Result<String, EngineError> {
    let fail = |message: String| EngineError::Credential {
        what: what.to_string(),
        message,
    };
    let value = match source {
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?,
        SecretSource::Env(name) => std::env::var(name).map_err(|_| {
            fail(format!(
                "the environment variable {name} is not set (or not UTF-8)"
            ))
        })?,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(fail(match source {
            SecretSource::File(p) => format!("{} is empty", p.display()),
            SecretSource::Env(n) => format!("the environment variable {n} is empty"),
        }));
    }
    Ok(value.to_string())
}

/// A repository in an object store.
#[derive(Clone, Debug)]
pub(super) struct ObjectStore {
    op: opendal::blocking::Operator,
    /// `azure:<account>/<container>/<prefix>` or `s3:<bucket>/<prefix>`.
    location: String,
    /// What a refusal of the credentials means here (`account key`, ...).
    container: String,
}

impl ObjectStore {
    pub(super) fn new(remote: &Remote) -> Result<ObjectStore, EngineError> {
        let (op, location, container) = match remote {
            Remote::Azure {
                account,
                container,
                endpoint,
                prefix,
                access_key,
            } => {
                let key = read_secret(access_key, "the Azure account key")?;
                let endpoint = endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
                let builder = opendal::services::Azblob::default()
                    .account_name(account)
                    .account_key(&key)
                    .container(container)
                    .endpoint(&endpoint)
                    .root(&format!("/{prefix}"));
                (
                    opendal::Operator::new(builder),
                    remote.name(),
                    format!("container `{container}` of account `{account}` at {endpoint}"),
                )
            }
            Remote::S3 {
                bucket,
                region,
                endpoint,
                prefix,
                access_key_id,
                secret_access_key,
            } => {
                let secret = read_secret(secret_access_key, "the S3 secret access key")?;
                let mut builder = opendal::services::S3::default()
                    .bucket(bucket)
                    .region(region.as_deref().unwrap_or("us-east-1"))
                    .access_key_id(access_key_id)
                    .secret_access_key(&secret)
                    .disable_config_load()
                    .disable_ec2_metadata()
                    .root(&format!("/{prefix}"));
                if let Some(e) = endpoint {
                    builder = builder.endpoint(e);
                }
                (
                    opendal::Operator::new(builder),
                    remote.name(),
                    format!(
                        "bucket `{bucket}` at {}",
                        endpoint.as_deref().unwrap_or("AWS S3")
                    ),
                )
            }
        };
        let failed = |e: opendal::Error| EngineError::Remote {
            repo: location.clone(),
            message: format!("cannot set up the storage: {}", e.message()),
        };
        let op = op
            .map_err(failed)?
            .with_context(OperationContext::new().with_http_transport(transport()?))
            .layer(
                RetryLayer::new()
                    .with_max_times(RETRIES)
                    .with_jitter()
                    .with_notify(log_retry),
            );
        let _entered = runtime()?.enter();
        let op = opendal::blocking::Operator::new(op).map_err(failed)?;
        Ok(ObjectStore {
            op,
            location,
            container,
        })
    }

    /// The object's path under the repository's folder (restic's layout).
    fn path(tpe: FileType, id: &Id) -> String {
        let hex = id.to_hex();
        match tpe {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{}", &hex[..2], &*hex),
            _ => format!("{}/{}", tpe.dirname(), &*hex),
        }
    }

    /// An OpenDAL error as a rustic error, with what it most likely means here.
    fn error(&self, doing: &str, e: opendal::Error) -> Box<RusticError> {
        RusticError::new(ErrorKind::Backend, "{problem}")
            .attach_context("problem", describe(&self.container, doing, &e))
    }

    /// Lists the objects under `dir/`, with their sizes.
    fn list_dir(&self, tpe: FileType) -> RusticResult<Vec<(Id, u64)>> {
        let dir = format!("{}/", tpe.dirname());
        let entries = self
            .op
            .list_options(
                &dir,
                ListOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .map_err(|e| self.error(&format!("listing {dir}"), e))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| {
                let id = Id::parse_some(e.name(), tpe)?;
                Some((id, e.metadata().content_length()))
            })
            .collect())
    }

    /// Writes, reads back and deletes one object, and lists the folder: the storage check.
    /// Returns what failed, in words.
    pub(super) fn round_trip(&self) -> Result<(), String> {
        let probe = format!(
            "backplan-check-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let content = format!("backplan storage check {probe}\n");
        self.op
            .list("")
            .map_err(|e| describe(&self.container, "listing the repository folder", &e))?;
        self.op
            .write(&probe, content.clone().into_bytes())
            .map_err(|e| describe(&self.container, "writing a test object", &e))?;
        let read = self
            .op
            .read(&probe)
            .map_err(|e| describe(&self.container, "reading the test object back", &e));
        let deleted = self
            .op
            .delete(&probe)
            .map_err(|e| describe(&self.container, "deleting the test object", &e));
        if read?.to_vec() != content.as_bytes() {
            return Err(format!(
                "{}: the test object read back differs from what was written",
                self.container
            ));
        }
        deleted
    }
}

/// Tries after the first failure of a request that may succeed later.
const RETRIES: usize = 4;

/// One log line per retry (OpenDAL's own is a multi-line report).
fn log_retry(event: opendal::layers::RetryEvent<'_>) {
    tracing::warn!(
        "object store: {:?} failed ({:?}: {}); retry {} of {RETRIES} in {:.1} s",
        event.op,
        event.err.kind(),
        event.err.message(),
        event.attempt,
        event.retry_after.as_secs_f64()
    );
}

/// What an OpenDAL error most likely means, in the operator's words.
fn describe(container: &str, doing: &str, e: &opendal::Error) -> String {
    let text = e.to_string();
    let has = |code: &str| text.contains(code);
    let cause = causes(e);
    let meaning = if has("AuthenticationFailed")
        || has("SignatureDoesNotMatch")
        || has("InvalidAccessKeyId")
        || has("InvalidAuthenticationInfo")
    {
        "the storage refused the credentials (wrong account key, access key id or secret)"
            .to_string()
    } else if has("ContainerNotFound") || has("NoSuchBucket") {
        format!("{container} does not exist; create it first")
    } else if has("AuthorizationFailure") {
        // Azure's answer both to a wrong key (the emulator) and to a key not allowed here.
        "the storage refused the credentials or their permission (a wrong account key, or one not allowed to use this container)".to_string()
    } else if has("AuthorizationPermissionMismatch")
        || has("AccessDenied")
        || e.kind() == opendal::ErrorKind::PermissionDenied
    {
        "the credentials were accepted but lack the permission for this".to_string()
    } else if has("ResourceNotFound") || has("AccountNotFound") || has("InvalidAccount") {
        "no such account at this endpoint".to_string()
    } else if e.kind() == opendal::ErrorKind::NotFound {
        "not found".to_string()
    } else if cause.contains("timed out") || cause.contains("deadline") {
        "the endpoint did not answer in time (stalled or too slow; each request is bounded)"
            .to_string()
    } else if cause.contains("closed before message completed")
        || cause.contains("reset")
        || cause.contains("broken pipe")
        || cause.contains("unexpected end")
        || cause.contains("unexpected eof")
    {
        "the connection was cut off during the request (network or endpoint failure); what it was writing is not in the storage".to_string()
    } else if has("error sending request") || has("connect") || has("dns") || has("timed out") {
        "the endpoint cannot be reached (address, port, network or TLS)".to_string()
    } else {
        format!("{:?}", e.kind())
    };
    let mut detail = e.message().lines().next().unwrap_or_default().to_string();
    if let Some(inner) = innermost(e) {
        detail += &format!(": {inner}");
    }
    format!("{doing} in {container}: {meaning} ({detail})")
}

/// The innermost cause of an error that has one (`connection reset by peer (os error 104)`).
fn innermost(e: &opendal::Error) -> Option<String> {
    let mut last = std::error::Error::source(e)?;
    while let Some(c) = last.source() {
        last = c;
    }
    Some(
        last.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The error's causes, innermost last, in lower case: what the network said (`connection
/// reset`, `operation timed out`, ...) lies under OpenDAL's `send http request`.
fn causes(e: &opendal::Error) -> String {
    let mut text = String::new();
    let mut next: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = next {
        text += &format!("{c}; ").to_lowercase();
        next = c.source();
    }
    text
}

impl ReadBackend for ObjectStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            return match self.op.stat("config") {
                Ok(m) => Ok(vec![(
                    Id::default(),
                    u32::try_from(m.content_length()).unwrap_or(u32::MAX),
                )]),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(self.error("looking for the repository's config", e)),
            };
        }
        self.list_dir(tpe)?
            .into_iter()
            .map(|(id, len)| {
                u32::try_from(len).map(|len| (id, len)).map_err(|_| {
                    RusticError::new(ErrorKind::Backend, "{problem}").attach_context(
                        "problem",
                        format!("{} {id} is larger than 4 GiB", tpe.dirname()),
                    )
                })
            })
            .collect()
    }

    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        if tpe == FileType::Config {
            return Ok(self
                .list_with_size(tpe)?
                .into_iter()
                .map(|(id, _)| id)
                .collect());
        }
        Ok(self.list_dir(tpe)?.into_iter().map(|(id, _)| id).collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let path = Self::path(tpe, id);
        self.op
            .read(&path)
            .map(|b| b.to_bytes())
            .map_err(|e| self.error(&format!("reading {path}"), e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let path = Self::path(tpe, id);
        let range = u64::from(offset)..u64::from(offset) + u64::from(length);
        self.op
            .read_options(
                &path,
                ReadOptions {
                    range: range.into(),
                    ..Default::default()
                },
            )
            .map(|b| b.to_bytes())
            .map_err(|e| self.error(&format!("reading {path} at {offset}"), e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        Self::path(tpe, id)
    }
}

impl WriteBackend for ObjectStore {
    /// Object stores have no folders to make.
    fn create(&self) -> RusticResult<()> {
        Ok(())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let path = Self::path(tpe, id);
        self.op
            .write(&path, content.into_vec())
            .map(|_| ())
            .map_err(|e| self.error(&format!("writing {path}"), e))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let path = Self::path(tpe, id);
        self.op
            .delete(&path)
            .map_err(|e| self.error(&format!("deleting {path}"), e))
    }
}

/// Tries a storage without touching its repository: the credentials are read, the folder is
/// listed (the container or bucket exists and the credentials are accepted), and a test
/// object is written beside the repository's files, read back and deleted.
pub(super) fn check(repo: &crate::engine::Repo) -> Result<(), EngineError> {
    let Some(remote) = &repo.remote else {
        return check_local(&repo.path);
    };
    let store = ObjectStore::new(remote)?;
    store.round_trip().map_err(|message| EngineError::Remote {
        repo: store.location.clone(),
        message,
    })
}

/// The same for a folder of this host: the repository's folder, or the nearest existing
/// folder above it (where it would be created).
fn check_local(path: &std::path::Path) -> Result<(), EngineError> {
    let dir = path
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(std::path::Path::new("/"));
    let probe = dir.join(format!(".backplan-check-{}", std::process::id()));
    let io = |op| move |source| EngineError::Io { op, source };
    std::fs::write(&probe, b"backplan storage check\n").map_err(io("writing a test file"))?;
    let read = std::fs::read(&probe);
    let removed = std::fs::remove_file(&probe);
    if read.map_err(io("reading the test file back"))? != b"backplan storage check\n" {
        return Err(EngineError::Io {
            op: "reading the test file back",
            source: std::io::Error::other("it differs from what was written"),
        });
    }
    removed.map_err(io("deleting the test file"))
}

/// The backend for `remote`, as rustic's repository backends.
pub(super) fn backends(remote: &Remote) -> Result<rustic_core::RepositoryBackends, EngineError> {
    let store: Arc<dyn WriteBackend> = Arc::new(ObjectStore::new(remote)?);
    Ok(rustic_core::RepositoryBackends::new(store, None))
}

/// The repository's `locks/` in the object store (rustic's backend has no file type for
/// locks; restic's lock protocol is in `lock.rs`).
pub(super) fn lock_files(remote: &Remote) -> Result<Arc<dyn super::lock::LockFiles>, EngineError> {
    Ok(Arc::new(ObjectStore::new(remote)?))
}

impl super::lock::LockFiles for ObjectStore {
    fn list(&self) -> Result<Vec<(String, u64)>, String> {
        let entries = self
            .op
            .list_options(
                "locks/",
                ListOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .map_err(|e| describe(&self.container, "listing locks/", &e))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && super::lock::is_lock_name(e.name()))
            .map(|e| (e.name().to_string(), e.metadata().content_length()))
            .collect())
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let path = format!("locks/{name}");
        match self.op.read(&path) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(describe(&self.container, &format!("reading {path}"), &e)),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let path = format!("locks/{name}");
        self.op
            .write(&path, bytes.to_vec())
            .map(|_| ())
            .map_err(|e| describe(&self.container, &format!("writing {path}"), &e))
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        let path = format!("locks/{name}");
        self.op
            .delete(&path)
            .map_err(|e| describe(&self.container, &format!("deleting {path}"), &e))
    }
}
