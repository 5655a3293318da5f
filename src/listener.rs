//! The one accept loop of the daemon's two servers (the control socket and the metrics
//! listener): at most `max` connections are served at once, more wait in the kernel's listen
//! backlog (so a flood of idle clients costs no descriptors), and accept errors (out of
//! descriptors, EMFILE, and the like) back off instead of spinning.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// A listening socket the loop can take connections from.
pub trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Serves `listener` until the task is aborted: each connection is handed to `serve` in a
/// task of its own. `what` names the listener in log lines.
pub fn serve_connections<L, F, Fut>(
    what: &'static str,
    listener: L,
    max: usize,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    L: Listener,
    F: Fn(L::Stream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            // A slot first: beyond the limit, clients wait in the kernel's backlog.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept_one().await {
                Ok(stream) => {
                    backoff = Duration::from_millis(50);
                    stream
                }
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let client = serve(stream);
            tokio::spawn(async move {
                client.await;
                drop(slot);
            });
        }
    })
}
