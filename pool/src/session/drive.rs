//! The loop every connection runs, whatever its protocol: read the peer, hand out
//! jobs, answer shares as their commits finish, write, and time out or end on a
//! kick. An [`Adapter`] (V1's session, V2's connection) turns what is read into
//! calls on its [`Core`] and queues what to write.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};
use tracing::Instrument;

use super::core::{AckDone, Core, MAX_IN_FLIGHT};
use super::{flush, linger};
use crate::context::Context;
use crate::jobs::Announcement;

/// A protocol's side of a connection.
pub(crate) trait Adapter {
    /// Where a share's acknowledgement goes.
    type Reply: Send + 'static;
    /// Frames the peer's bytes; V2's also encrypts what is written.
    type Codec: Decoder<Error: std::fmt::Display>;
    /// One queued write.
    type Out: AsRef<[u8]>;

    fn core(&mut self) -> &mut Core<Self::Reply>;
    /// When the connection times out next, and why.
    fn deadline(&self) -> (Instant, &'static str);
    /// Acts on one item the codec read.
    fn input(&mut self, item: <Self::Codec as Decoder>::Item, codec: &mut Self::Codec);
    /// Sends a job; true when it went out on a new tip.
    fn on_job(&mut self, announcement: &Arc<Announcement>, codec: &mut Self::Codec) -> bool;
    /// Answers one share whose commit finished.
    fn finish_ack(&mut self, done: AckDone<Self::Reply>, codec: &mut Self::Codec);
    /// After every commit finished this turn was answered.
    fn acks_answered(&mut self, _codec: &mut Self::Codec) {}
    /// What is queued to write.
    fn out(&mut self) -> &mut Vec<Self::Out>;
}

/// Runs one connection of Stratum `version` from `peer` inside its log span: `run`
/// gets the session id; how the connection ended is logged.
pub(crate) async fn logged<F, R>(ctx: &Context, peer: SocketAddr, version: u8, run: F)
where
    F: FnOnce(u64) -> R,
    R: Future<Output = Result<(), String>>,
{
    let id = ctx.next_session.fetch_add(1, Ordering::Relaxed);
    let span =
        tracing::info_span!("session", id, %peer, v = version, worker = tracing::field::Empty);
    async move {
        tracing::debug!("connected");
        match run(id).await {
            Ok(()) => tracing::debug!("closed"),
            Err(reason) => tracing::info!(%reason, "disconnected"),
        }
    }
    .instrument(span)
    .await;
}

/// Runs `adapter` over `framed` until the peer closes, an error, a timeout, a kick,
/// or shutdown; answers every share already on its way to the ledger before closing.
pub(crate) async fn drive<S, A>(
    mut framed: FramedRead<S, A::Codec>,
    adapter: &mut A,
    ctx: &Context,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: Adapter,
{
    let mut jobs = ctx.book.subscribe();
    jobs.borrow_and_update();
    // Made once and re-armed, not rebuilt on every message: with many
    // thousands of sessions woken by one job, every iteration counts.
    let kick = adapter.core().kick.clone();
    let kicked = kick.cancelled();
    tokio::pin!(kicked);
    let timeout = tokio::time::sleep_until(adapter.deadline().0);
    tokio::pin!(timeout);
    let result = loop {
        // A new block's job written by this turn's flush, for the fan-out metric.
        let mut new_block = None;
        let deadline = adapter.deadline().0;
        if timeout.deadline() != deadline {
            timeout.as_mut().reset(deadline);
        }
        let in_flight = adapter.core().acks.len();
        tokio::select! {
            biased;
            () = &mut kicked => break Err(if ctx.shutdown.is_cancelled() { "shutting down" } else { "kicked by the operator" }.to_owned()),
            () = &mut timeout => break Err(adapter.deadline().1.to_owned()),
            Some(done) = adapter.core().acks.next(), if in_flight > 0 => {
                let codec = framed.decoder_mut();
                adapter.finish_ack(done, codec);
                // One group commit completes many of this connection's shares at
                // once: answer all of them with one write.
                while let Some(Some(done)) = adapter.core().acks.next().now_or_never() {
                    adapter.finish_ack(done, codec);
                }
                adapter.acks_answered(codec);
            }
            changed = jobs.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let announcement = jobs.borrow_and_update().clone();
                if adapter.on_job(&announcement, framed.decoder_mut()) {
                    new_block = Some(announcement);
                }
            }
            item = framed.next(), if in_flight < MAX_IN_FLIGHT => match item {
                None => break Ok(()),
                Some(Err(err)) => break Err(err.to_string()),
                Some(Ok(item)) => adapter.input(item, framed.decoder_mut()),
            },
        }
        if let Err(reason) = flush(framed.get_mut(), adapter.out()).await {
            break Err(reason);
        }
        if let Some(job) = new_block {
            ctx.metrics
                .fanout
                .written(job.job.id, job.published.elapsed());
        }
        if let Some(reason) = adapter.core().close.take() {
            break Err(reason);
        }
    };
    while let Some(done) = adapter.core().acks.next().await {
        adapter.finish_ack(done, framed.decoder_mut());
    }
    adapter.acks_answered(framed.decoder_mut());
    let flushed = flush(framed.get_mut(), adapter.out()).await;
    if result.is_err() && flushed.is_ok() {
        linger(framed.into_inner()).await;
    }
    result
}
