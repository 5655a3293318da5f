//! `backplan run`: the daemon's process set-up: runtime, signals, then `daemon::run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{Exit, LogFormat};
use crate::daemon::{self, FileClock, SystemClock};

pub struct Settings {
    pub config: PathBuf,
    pub clock_file: Option<PathBuf>,
}

pub fn run(s: &Settings, _format: LogFormat) -> Exit {
    // A second SIGTERM/SIGINT exits at once (status 1): the first sets the flag, which arms
    // the immediate exit for the next.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let armed = signal_hook::flag::register_conditional_shutdown(sig, 1, term.clone())
            .and_then(|_| signal_hook::flag::register(sig, term.clone()));
        if let Err(e) = armed {
            tracing::error!("cannot handle signals: {e}");
            return Exit::Failure;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return Exit::Failure;
        }
    };
    let result = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reload_tx.try_send(());
            }
        });
        let mut term_sig = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int_sig = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let shutdown = async move {
            tokio::select! {
                _ = term_sig.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int_sig.recv() => tracing::info!("SIGINT: stopping"),
            }
        };
        let _watchdog = daemon::spawn_watchdog();
        let clock: Arc<dyn daemon::Clock> = match &s.clock_file {
            Some(f) => Arc::new(FileClock::new(f.clone())),
            None => Arc::new(SystemClock),
        };
        daemon::run(
            daemon::Settings {
                config: s.config.clone(),
                clock,
                clock_file: s.clock_file.clone(),
                grace: Duration::from_secs(5),
            },
            reload_rx,
            shutdown,
        )
        .await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            Exit::Failure
        }
    }
}
