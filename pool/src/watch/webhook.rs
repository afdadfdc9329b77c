//! The webhook: worker events POSTed as JSON to the operator's URL.
//!
//! Events go through a bounded queue to one sender thread; when the queue is full
//! (the receiver is slow or down) new events are dropped and counted, so the
//! pool never waits for the operator's server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Events waiting to be sent, at most.
const QUEUE: usize = 256;
/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The sending side; dropping it lets the thread finish the queue and exit.
pub struct Webhook {
    queue: SyncSender<Value>,
    /// Events dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
}

impl Webhook {
    /// Starts the sender thread for `url`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(url: String) -> std::io::Result<Webhook> {
        let (queue, events) = sync_channel::<Value>(QUEUE);
        let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
        std::thread::Builder::new()
            .name("quarry-webhook".into())
            .spawn(move || {
                for event in events {
                    if let Err(err) = agent.post(&url).send_json(&event) {
                        tracing::warn!(%url, %err, "webhook POST failed; event dropped");
                    }
                }
            })?;
        Ok(Webhook {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `event`; drops it (and counts it) if the queue is full.
    pub fn send(&self, event: Value) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
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

        let webhook = Webhook::start(format!("http://{addr}/hook")).unwrap();
        webhook.send(json!({"event": "worker_status", "worker": "erin.1", "status": "offline"}));
        let received = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the event arrives")
            .unwrap();
        assert_eq!(received["worker"], "erin.1");
        assert_eq!(received["status"], "offline");
        assert_eq!(webhook.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        // A receiver that accepts connections (in the kernel's backlog) but
        // never answers: the sending thread is stuck on its first event, so
        // whatever overflows the queue must be dropped, however fast it runs.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());
        let webhook = Webhook::start(url).unwrap();
        for i in 0..(QUEUE + 100) {
            webhook.send(serde_json::json!({ "n": i }));
        }
        // The thread takes at most a few events in the meantime; the rest overflowed.
        assert!(webhook.dropped.load(Ordering::Relaxed) >= 90);
    }
}
