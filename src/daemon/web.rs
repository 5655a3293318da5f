//! The metrics and the status page on `metrics_listen`: answered from the daemon's memory
//! (the records in memory as last read, never a read of the store; the daemon's counters).

use super::*;
use crate::http::{Handler, Response};

/// The listener in force: the address the file asks for (`None`: not served) and its task.
pub(super) struct Web {
    pub(super) wanted: Option<std::net::SocketAddr>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Web {
    /// Binds `wanted` (when set) and serves it.
    pub(super) fn start(
        wanted: Option<std::net::SocketAddr>,
        shared: Arc<Shared>,
    ) -> Result<Web, DaemonError> {
        let Some(addr) = wanted else {
            return Ok(Web { wanted, task: None });
        };
        let err = |source| DaemonError::Listen { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let bound = listener.local_addr().map_err(err)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(err)?;
        tracing::info!("metrics on http://{bound}/metrics, status page on http://{bound}/");
        let handler: Handler = Arc::new(move |path: &str| answer(path, &shared));
        Ok(Web {
            wanted,
            task: Some(crate::http::serve(listener, handler)),
        })
    }

    pub(super) fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `wanted`; an address that cannot be bound (taken by another process) is logged
/// and tried again at the next reload: **metrics never stop backups**.
pub(super) fn start_or_log(wanted: Option<std::net::SocketAddr>, shared: &Arc<Shared>) -> Web {
    Web::start(wanted, shared.clone()).unwrap_or_else(|e| {
        tracing::error!(
            "{e}; the metrics and the status page are not served (tried again at the next reload)"
        );
        Web { wanted, task: None }
    })
}

/// After a reload: serves where the file in force now says, if that changed or could not be
/// bound before.
pub(super) fn follow(web: &mut Web, shared: &Arc<Shared>) {
    let wanted = shared
        .config
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|c| c.daemon.metrics_listen);
    if wanted == web.wanted && (wanted.is_none() || web.task.is_some()) {
        return;
    }
    web.stop();
    *web = start_or_log(wanted, shared);
}

fn answer(path: &str, shared: &Shared) -> Response {
    match path {
        "/metrics" => Response::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(shared),
        ),
        "/" => {
            // One page at a time: on a large host a plan takes a while.
            let _one = shared.page.lock().unwrap_or_else(|p| p.into_inner());
            Response::ok("text/html; charset=utf-8", page(shared))
        }
        _ => Response::text(
            404,
            "not found: this server has / (the status page) and /metrics",
        ),
    }
}

/// The records in memory as last read (never a read of the store).
fn recorded(shared: &Shared) -> Arc<crate::records::Recorded> {
    shared.store.last_read().unwrap_or_default()
}

fn metrics_text(shared: &Shared) -> String {
    let cfg = super::read(&shared.config);
    let rejected = shared
        .config_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .is_some();
    let rec = recorded(shared);
    crate::metrics::render(
        &crate::metrics::Scrape {
            recorded: &rec,
            config: cfg.as_deref(),
            config_rejected: rejected,
        },
        &shared.metrics,
    )
}

fn page(shared: &Shared) -> String {
    let cfg = super::read(&shared.config);
    let error = super::read(&shared.config_error);
    let activity = super::read(&shared.activity);
    let verify = super::read(&shared.last_verify);
    let rec = recorded(shared);
    let now = shared.clock.now();
    let plan = cfg
        .as_deref()
        .map(|c| crate::plan::plan(c, &rec, now, PlanOptions::default()));
    crate::status_page::render(&crate::status_page::Page {
        config: cfg.as_deref(),
        config_error: error.as_deref(),
        recorded: &rec,
        plan: plan.as_ref(),
        activity: &activity,
        last_verify: verify.as_deref(),
        now,
    })
}
