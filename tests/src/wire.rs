//! What the pool puts on the wire, byte for byte: a stream wrapper that keeps
//! every byte read, and the check that those bytes are whole JSON lines.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that keeps a copy of every byte read from it.
pub struct Recorded<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S> Recorded<S> {
    /// Wraps `inner`; the bytes read land in the returned buffer.
    pub fn new(inner: S) -> (Recorded<S>, Arc<Mutex<Vec<u8>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (
            Recorded {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = &buf.filled()[before..];
            self.seen.lock().expect("recording").extend_from_slice(new);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Splits `bytes` into lines, failing unless every line is exactly one
/// non-empty JSON object ended by `\n` (no blank lines, no `\r`, nothing
/// after the last `\n`). Returns the objects.
pub fn whole_json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    assert_eq!(bytes.last(), Some(&b'\n'), "the stream ends mid-line");
    let text = std::str::from_utf8(bytes).expect("UTF-8 from the pool");
    let lines: Vec<&str> = text[..text.len() - 1].split('\n').collect();
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            assert!(
                !line.is_empty() && !line.contains('\r'),
                "line {i} is blank or has a CR: {:?} (after {:?})",
                line,
                i.checked_sub(1).map(|p| lines[p])
            );
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {i} is not JSON ({e}): {line}"));
            assert!(value.is_object(), "line {i} is not an object: {line}");
            value
        })
        .collect()
}
