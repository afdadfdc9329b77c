//! Accept loops for plain and TLS Stratum V1 and for Stratum V2. The accept loop
//! only accepts; every TLS or Noise handshake runs inside the connection's own
//! task, under a timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::metrics::Listener;
use crate::session::serve;
use crate::tls::Tls;

/// How a listener wraps its connections.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(Arc<Tls>),
    /// Stratum V2: Noise-encrypted frames (the handshake is the session's).
    V2,
}

/// Accepts connections until shutdown, spawning one tracked task each.
pub async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    ctx: Arc<Context>,
    tracker: TaskTracker,
) {
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: log once a second, back off, never spin.
                let now = tokio::time::Instant::now();
                if last_error_log.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
                {
                    tracing::warn!(%err, "accept failed");
                    last_error_log = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the connection cap this waits, holding this one connection; the
        // ones after it stay in the listen backlog until a slot frees.
        let slot = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            slot = ctx.guard.slot() => slot,
        };
        let admission = match ctx.guard.admit(peer.ip(), slot) {
            Ok(admission) => admission,
            Err(refusal) => {
                ctx.metrics.refused(&refusal);
                tracing::debug!(%peer, %refusal, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        match &transport {
            Transport::Plain => {
                ctx.metrics.connection(Listener::Tcp);
                tracker.spawn(async move {
                    let _admission = admission;
                    serve(stream, peer, ctx).await;
                });
            }
            Transport::V2 => {
                ctx.metrics.connection(Listener::V2);
                tracker.spawn(async move {
                    let _admission = admission;
                    crate::session::v2::serve(stream, peer, ctx).await;
                });
            }
            Transport::Tls(tls) => {
                let acceptor = tls.acceptor();
                let timeout = ctx.config.handshake_timeout;
                ctx.metrics.connection(Listener::Tls);
                tracker.spawn(async move {
                    let _admission = admission;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            ctx.metrics.tls_handshake(Ok(()));
                            serve(stream, peer, ctx).await;
                        }
                        Ok(Err(err)) => {
                            ctx.metrics.tls_handshake(Err(false));
                            tracing::debug!(%peer, %err, "TLS handshake failed");
                        }
                        Err(_) => {
                            ctx.metrics.tls_handshake(Err(true));
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
}
