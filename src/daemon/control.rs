//! The control socket server: bounded requests and connections, queries answered from the
//! daemon's state, approved plans carried out once.

use super::*;

/// Connections served at once; more wait in the listen backlog, so a flood of idle clients
/// costs the daemon no descriptors.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// A request must arrive whole within this time of the connection (or of the previous reply),
/// and a reply must be taken within it.
pub(super) const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest request line read (queries are short: no file travels over the socket).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Serves the control socket (mode 0660): one JSON query per line, one JSON answer per line.
/// A malformed request gets an error reply; a client never disturbs the daemon: a request is
/// read at most [`MAX_REQUEST_BYTES`] long, at most [`MAX_CONNECTIONS`] are
/// served at once, and an idle one is closed after [`CLIENT_TIMEOUT`].
pub(super) fn serve_control(
    path: &Path,
    shared: Arc<Shared>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a daemon that died: nobody answers on it.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(crate::listener::serve_connections(
        "control socket",
        listener,
        MAX_CONNECTIONS,
        move |stream| {
            let shared = shared.clone();
            async move {
                let _ = serve_client(stream, shared).await;
            }
        },
    ))
}

pub(super) async fn serve_client(
    stream: tokio::net::UnixStream,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    use crate::control::Reply;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let limit = MAX_REQUEST_BYTES;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        // Never more than the limit (and the newline) in memory, whatever the client sends.
        let mut line = Vec::new();
        let got = tokio::time::timeout(
            CLIENT_TIMEOUT,
            (&mut read)
                .take(limit as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await;
        let reply = |r: Reply| serde_json::to_vec(&r).expect("replies serialise");
        let mut out = match got {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Ok(()), // idle, broken or closed
            Ok(Ok(_)) if line.len() > limit => reply(Reply::Error {
                error: format!("request longer than {limit} bytes; the connection is closed"),
            }),
            Ok(Ok(_)) => match crate::control::parse_request(&String::from_utf8_lossy(&line)) {
                Err(error) => reply(Reply::Error { error }),
                Ok(q) => {
                    let shared = shared.clone();
                    let answered = tokio::task::spawn_blocking(move || match q {
                        Query::Recorded => recorded(&shared),
                        q => reply(Reply::Answer(answer(&q, &shared))),
                    });
                    answered.await.unwrap_or_else(|e| {
                        reply(Reply::Error {
                            error: e.to_string(),
                        })
                    })
                }
            },
        };
        let close = line.len() > limit;
        out.push(b'\n');
        tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(&out))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if close {
            return Ok(());
        }
    }
}

/// The reply to [`Query::Recorded`] (`crate::control::ask_recorded`), as one compact JSON
/// line: the records written once, straight from memory. A store that cannot be read now
/// answers with what it held when last read.
fn recorded(shared: &Shared) -> Vec<u8> {
    let rec = shared.store.load().map_err(|e| e.to_string());
    let rec = rec.or_else(|e| shared.store.last_read().ok_or(e));
    let reply = match &rec {
        Ok(r) => crate::control::RecordedReply {
            recorded: Some(&**r),
            error: None,
        },
        Err(e) => crate::control::RecordedReply {
            recorded: None,
            error: Some(e.clone()),
        },
    };
    serde_json::to_vec(&reply).expect("records serialise")
}

pub(super) fn answer(q: &Query, shared: &Shared) -> Answer {
    if let Query::Apply {
        allow_mass_removal,
        approved,
    } = q
    {
        return approve(shared, *allow_mass_removal, approved);
    }
    let cfg = super::read(&shared.config);
    if let (Query::Verify { subset, json }, Some(cfg)) = (q, &cfg) {
        let (mut report, problems, verified) = shared.verify_full(cfg, *subset);
        if *json {
            report = crate::verify::Verified::json(verified.as_ref(), &report);
        }
        return Answer {
            exit: u8::from(problems),
            stdout: report,
            stderr: String::new(),
        };
    }
    let error = super::read(&shared.config_error);
    // A store that cannot be read (a full disk) still answers with what it held last.
    let (rec, stale) = match shared.store.load() {
        Ok(r) => (r, None),
        Err(e) => match shared.store.last_read() {
            Some(r) => (
                r,
                Some(format!(
                    "warning: the state store cannot be read ({e}); showing what it held when last read\n"
                )),
            ),
            None => {
                return Answer {
                    exit: 1,
                    stdout: String::new(),
                    stderr: format!("error: {e}\n"),
                };
            }
        },
    };
    let journal = || shared.store.journal_entries().map_err(|e| e.to_string());
    let mut a = crate::query::answer(
        q,
        &Context {
            config: cfg.as_deref(),
            config_error: error.as_deref(),
            recorded: &rec,
            journal: &journal,
            now: shared.clock.now(),
        },
    );
    if let Some(w) = stale {
        a.stderr.insert_str(0, &w);
    }
    if let (Query::Status { json: true, .. }, Ok(mut v)) =
        (q, serde_json::from_str::<serde_json::Value>(&a.stdout))
    {
        v["daemon"] = serde_json::json!({
            "activity": *shared.activity.read().unwrap_or_else(|p| p.into_inner()),
            "last_verify": *shared.last_verify.read().unwrap_or_else(|p| p.into_inner()),
            "storages": super::storage_check::json(&super::read(&shared.storage_checks)),
        });
        a.stdout = serde_json::to_string_pretty(&v).expect("JSON serialises") + "\n";
    }
    if matches!(q, Query::Status { json: false, .. }) {
        let activity = shared.activity.read().unwrap_or_else(|p| p.into_inner());
        let verified = shared.last_verify.read().unwrap_or_else(|p| p.into_inner());
        let verified = verified
            .as_ref()
            .map(|v| format!("Last verify: {v}\n"))
            .unwrap_or_default();
        let storages = super::storage_check::text(&super::read(&shared.storage_checks));
        a.stdout = format!("Daemon: {activity}\n{verified}{storages}\n{}", a.stdout);
    }
    a
}

/// `apply` with the daemon running: carries out the plan of the file in force once, with the
/// options the operator gave (`--allow-mass-removal` approves one refused mass removal), if its
/// actions are the ones the operator saw and approved. Whoever may use the socket may do this.
pub(super) fn approve(shared: &Shared, allow_mass_removal: bool, approved: &str) -> Answer {
    let refuse = |why: String| Answer {
        exit: 1,
        stdout: String::new(),
        stderr: format!("error: {why}\n"),
    };
    // After the loop's reconcile under way, if any; the file in force and the state are read,
    // and the plan made and carried out, under the same lock.
    let _work = shared.work.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = super::read(&shared.config);
    let error = super::read(&shared.config_error);
    let Some(cfg) = cfg else {
        return refuse("the daemon has no valid configuration".into());
    };
    if let Some(e) = error {
        return refuse(format!(
            "the file on disk is invalid, so the daemon keeps the last valid one; nothing was applied. Fix the file, then run apply again:\n{e}"
        ));
    }
    let rec = match shared.store.load() {
        Ok(r) => r,
        Err(e) => return refuse(e.to_string()),
    };
    let plan = crate::plan::plan(
        &cfg,
        &rec,
        shared.clock.now(),
        PlanOptions { allow_mass_removal },
    );
    // Let go of the records before writing: a write while they are held copies them.
    drop(rec);
    if crate::control::approved_actions(&plan) != approved {
        return refuse(
            "the daemon's plan is not the one shown (the file in force or the recorded state changed since); nothing was applied. Run apply again to see the current plan".into(),
        );
    }
    if !plan.refusals.is_empty() {
        return refuse("the plan has refusals; nothing was applied".into());
    }
    tracing::info!(
        allow_mass_removal,
        "carrying out a plan approved on the control socket"
    );
    let now = || shared.clock.now();
    let mut exec = Executor::new(
        &cfg,
        &shared.store,
        shared.engine.as_ref(),
        Arc::new(LogProgress),
        &now,
    );
    exec.metrics = Some(shared.metrics.clone());
    exec.notify = Some(shared.notify.clone());
    shared.metrics.refusals(plan.refusals.len());
    let ran = exec.run(&plan);
    shared.notify.run_ended();
    crate::metrics::measure_repositories(&cfg, &shared.metrics);
    if let Err(e) = ran {
        return refuse(format!("apply stopped: {e}"));
    }
    let mut stdout = String::new();
    for (outcome, address, what) in &exec.report.lines {
        let tag = match outcome {
            crate::apply::Outcome::Done => "ok  ",
            crate::apply::Outcome::Failed | crate::apply::Outcome::FailedForGood => "FAIL",
        };
        stdout += &format!("  {tag} {address}: {what}\n");
    }
    let failed = exec.report.failures();
    let done = exec.report.lines.len() - failed;
    stdout += &format!("\nApply complete (by the daemon): {done} done, {failed} failed.\n");
    Answer {
        exit: u8::from(failed > 0),
        stdout,
        stderr: String::new(),
    }
}
