//! The webhook: worker and block events POSTed as JSON to the operator's URL.
//!
//! Events go through a bounded queue to one sender task; when the queue is full
//! (the receiver is slow or down) new events are dropped and counted, so the
//! pool never waits for the operator's server. What became of every event is
//! counted in [`Deliveries`], which `/metrics` exposes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::{channel, error::TrySendError, Sender};

/// Events waiting to be sent, at most.
const QUEUE: usize = 256;
/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What became of the events handed to the webhook.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// POSTed and answered with a success status.
    pub sent: AtomicU64,
    /// POSTed, but the request failed or the receiver answered an error.
    pub failed: AtomicU64,
    /// Never POSTed: the queue was full.
    pub dropped: AtomicU64,
}

/// The sending side; dropping it lets the task finish the queue and end.
pub struct Webhook {
    queue: Sender<Value>,
    deliveries: Arc<Deliveries>,
}

impl Webhook {
    /// Starts the sender task for `url` (on the current tokio runtime), counting
    /// into `deliveries`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn start(url: String, deliveries: Arc<Deliveries>) -> reqwest::Result<Webhook> {
        let (queue, mut events) = channel::<Value>(QUEUE);
        let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let counts = deliveries.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let sent = http.post(&url).json(&event).send().await;
                match sent.and_then(reqwest::Response::error_for_status) {
                    Ok(_) => counts.sent.fetch_add(1, Ordering::Relaxed),
                    Err(err) => {
                        tracing::warn!(%url, %err, "webhook POST failed; event dropped");
                        counts.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
        Ok(Webhook { queue, deliveries })
    }

    /// Queues `event`; drops it (and counts it) if the queue is full.
    pub fn send(&self, event: Value) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.deliveries.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::json;

    /// Waits (up to 30 s) until `counter` reaches `n`.
    async fn reaches(counter: &AtomicU64, n: u64) {
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while counter.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        waited.await.expect("the count is reached");
    }

    #[tokio::test]
    async fn posts_events_to_a_real_server() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(8);
        let app = Router::new().route(
            "/hook",
            post(move |Json(event): Json<Value>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event).await;
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let deliveries = Arc::new(Deliveries::default());
        let webhook = Webhook::start(format!("http://{addr}/hook"), deliveries.clone()).unwrap();
        webhook.send(json!({"event": "worker_status", "worker": "erin.1", "status": "offline"}));
        let received = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the event arrives")
            .unwrap();
        assert_eq!(received["worker"], "erin.1");
        assert_eq!(received["status"], "offline");
        reaches(&deliveries.sent, 1).await;
        assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0);
        assert_eq!(deliveries.dropped.load(Ordering::Relaxed), 0);
    }

    /// https URLs are spoken over TLS and the receiver's certificate is
    /// verified: a self-signed one that no platform root vouches for is refused
    /// by the webhook during the handshake, and the event counts as failed.
    #[tokio::test]
    async fn speaks_tls_to_https_receivers_and_verifies_their_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let tls = crate::tls::Tls::load(crate::tls::CertSource::SelfSigned {
            dir: dir.path().to_owned(),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let deliveries = Arc::new(Deliveries::default());
        let webhook =
            Webhook::start(format!("https://localhost:{port}/hook"), deliveries.clone()).unwrap();
        webhook.send(json!({"event": "worker_status"}));
        let (stream, _) = listener.accept().await.unwrap();
        let Err(refused) = tls.acceptor().accept(stream).await else {
            panic!("the webhook trusted a self-signed certificate");
        };
        assert!(
            refused.to_string().contains("UnknownCA")
                || refused.to_string().contains("BadCertificate"),
            "{refused}"
        );
        reaches(&deliveries.failed, 1).await;
        assert_eq!(deliveries.sent.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_blocking() {
        // A receiver that accepts connections (in the kernel's backlog) but
        // never answers: the sending task is stuck on its first event, so
        // whatever overflows the queue must be dropped, however fast it runs.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());
        let deliveries = Arc::new(Deliveries::default());
        let webhook = Webhook::start(url, deliveries.clone()).unwrap();
        for i in 0..(QUEUE + 100) {
            webhook.send(serde_json::json!({ "n": i }));
        }
        // The task takes at most a few events in the meantime; the rest overflowed.
        assert!(deliveries.dropped.load(Ordering::Relaxed) >= 90);
    }
}
