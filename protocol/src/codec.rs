//! The line codec: one JSON message per `\n`-terminated line.
//!
//! Unlike an unbounded line reader it never holds more than `max_length` bytes of a
//! line it has not finished: a longer line is a [`CodecError::LineTooLong`] and the
//! connection is expected to close. `\r\n` endings and blank lines are tolerated.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::jsonrpc::WireLine;

/// A framing violation; the peer should be disconnected.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into lines of at most `max_length` bytes (excluding `\n`).
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_length: usize,
    /// How far the buffer has been searched for `\n` already.
    searched: usize,
}

impl LineCodec {
    /// A codec that refuses lines longer than `max_length` bytes.
    pub fn new(max_length: usize) -> Self {
        Self {
            max_length,
            searched: 0,
        }
    }

    /// The configured maximum.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

impl Decoder for LineCodec {
    type Item = String;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, CodecError> {
        loop {
            // A line of max_length bytes plus its '\n' is the longest acceptable frame.
            let limit = buf.len().min(self.max_length.saturating_add(1));
            let newline = buf[self.searched..limit].iter().position(|&b| b == b'\n');
            let Some(offset) = newline else {
                if buf.len() > self.max_length {
                    return Err(CodecError::LineTooLong {
                        max: self.max_length,
                    });
                }
                self.searched = limit;
                return Ok(None);
            };
            let end = self.searched + offset;
            self.searched = 0;
            let frame = buf.split_to(end + 1);
            let line = frame[..end].strip_suffix(b"\r").unwrap_or(&frame[..end]);
            if line.iter().all(|b| matches!(b, b' ' | b'\t')) {
                continue;
            }
            return match std::str::from_utf8(line) {
                Ok(text) => Ok(Some(text.to_owned())),
                Err(_) => Err(CodecError::InvalidUtf8),
            };
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<String>, CodecError> {
        // A final line without '\n' is incomplete; drop it rather than act on it.
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                buf.clear();
                self.searched = 0;
                Ok(None)
            }
        }
    }
}

/// A [`WireLine`] goes out as it is: it already ends in its one `\n`.
impl Encoder<WireLine> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, line: WireLine, buf: &mut BytesMut) -> Result<(), CodecError> {
        buf.extend_from_slice(line.as_bytes());
        Ok(())
    }
}

/// Raw text (a test's hand-made line) gets a `\n` appended.
impl<T: AsRef<str>> Encoder<T> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, line: T, buf: &mut BytesMut) -> Result<(), CodecError> {
        let line = line.as_ref();
        buf.reserve(line.len() + 1);
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Result<Vec<String>, CodecError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(line) = codec.decode(&mut buf)? {
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn splits_lines_and_tolerates_crlf_and_blank_lines() {
        let mut codec = LineCodec::new(100);
        let lines = decode_all(&mut codec, b"a\r\n\n  \r\nb\nc").unwrap();
        assert_eq!(lines, ["a", "b"]);
    }

    #[test]
    fn a_line_of_exactly_the_maximum_is_accepted() {
        let mut codec = LineCodec::new(8);
        assert_eq!(decode_all(&mut codec, b"12345678\n").unwrap(), ["12345678"]);
    }

    #[test]
    fn an_overlong_line_is_an_error_without_waiting_for_its_end() {
        let mut codec = LineCodec::new(8);
        assert!(matches!(
            decode_all(&mut codec, b"123456789"),
            Err(CodecError::LineTooLong { max: 8 })
        ));
    }

    #[test]
    fn an_unlimited_maximum_does_not_overflow() {
        let mut codec = LineCodec::new(usize::MAX);
        assert_eq!(decode_all(&mut codec, b"a\nb").unwrap(), ["a"]);
    }

    #[test]
    fn invalid_utf8_is_a_typed_error() {
        let mut codec = LineCodec::new(8);
        assert!(matches!(
            decode_all(&mut codec, b"\xff\xfe\n"),
            Err(CodecError::InvalidUtf8)
        ));
    }

    #[test]
    fn incremental_input_is_searched_once() {
        let mut codec = LineCodec::new(64);
        let mut buf = BytesMut::new();
        for chunk in [&b"{\"id\""[..], b":1}", b"\n{"] {
            buf.extend_from_slice(chunk);
            if let Some(line) = codec.decode(&mut buf).unwrap() {
                assert_eq!(line, "{\"id\":1}");
            }
        }
        assert_eq!(&buf[..], b"{");
    }

    /// Found by `encode_then_decode_round_trips`: a form feed is content, not
    /// blank space, so the line survives the round trip.
    #[test]
    fn regression_a_form_feed_line_round_trips() {
        let mut codec = LineCodec::new(100);
        let mut buf = BytesMut::new();
        codec.encode("\u{c}", &mut buf).unwrap();
        assert_eq!(decode_all(&mut codec, &buf).unwrap(), ["\u{c}"]);
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(lines in proptest::collection::vec("[^\n\r]*[^\n\r \t]", 0..8)) {
            let mut codec = LineCodec::new(1 << 16);
            let mut buf = BytesMut::new();
            for line in &lines {
                codec.encode(line, &mut buf).unwrap();
            }
            let mut out = Vec::new();
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
            prop_assert_eq!(out, lines);
        }

        #[test]
        fn buffer_never_exceeds_the_maximum_while_undecided(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20)
        ) {
            let mut codec = LineCodec::new(32);
            let mut buf = BytesMut::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(line)) => prop_assert!(line.len() <= 32),
                        Ok(None) => { prop_assert!(buf.len() <= 32); break; }
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
}
