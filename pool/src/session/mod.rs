//! Miners' connections: Stratum V1 ([`v1`], JSON lines over TCP or TLS) and
//! Stratum V2 ([`v2`], Noise-encrypted binary frames), two thin adapters over one
//! [`core`] (budgets and bans, workers, share judging and the acknowledgement
//! pipeline, difficulty and the jobs remembered), run by one loop (`drive`).
//!
//! Data flows one way: socket → codec → adapter → [`core::Core::judge`] →
//! validation → ledger → reply. Share acknowledgements are pipelined: a share is
//! acknowledged only once its ledger transaction has committed, while the
//! connection keeps reading (up to [`core::MAX_IN_FLIGHT`] unanswered shares).

pub(crate) mod core;
mod drive;
pub mod v1;
pub mod v2;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) use self::core::check_worker_name;
pub use v1::serve;

/// A peer that does not take our writes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection we close keeps draining the peer's input, so our
/// last lines (the reason for the close) arrive instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
/// The most input a lingering close reads and discards.
const LINGER_BYTES: usize = 1 << 20;

/// Closes our side and discards the peer's unread input for a moment: closing
/// a socket with unread input resets the connection, and a reset throws away
/// what we wrote last but the peer has not yet taken.
async fn linger<S>(mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        stream.shutdown().await?;
        // On the heap: an array here would be part of every session's task.
        let mut buf = vec![0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Writes the queued messages: a single one (the common case: a job, or an
/// answer) straight from where it lives, several joined into one write.
async fn flush<S, B>(stream: &mut S, out: &mut Vec<B>) -> Result<(), String>
where
    S: AsyncWrite + Unpin,
    B: AsRef<[u8]>,
{
    use tokio::io::AsyncWriteExt;
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        match out.as_slice() {
            [one] => stream.write_all(one.as_ref()).await?,
            many => {
                let mut joined = Vec::with_capacity(many.iter().map(|m| m.as_ref().len()).sum());
                for message in many {
                    joined.extend_from_slice(message.as_ref());
                }
                stream.write_all(&joined).await?;
            }
        }
        out.clear();
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("peer is not reading".to_owned()),
    }
}
