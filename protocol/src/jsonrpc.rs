//! JSON-RPC 1.0 framing as Stratum speaks it: ids, classification of a line into
//! request, notification or response by the keys present, and line formatting.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::reject::StratumError;

/// A JSON-RPC id: echoed back exactly as it arrived (number, string or null).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Id {
    #[default]
    Null,
    Number(serde_json::Number),
    String(String),
}

impl Id {
    /// Whether the id is `null` (a notification, which gets no reply).
    pub fn is_null(&self) -> bool {
        matches!(self, Id::Null)
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Null => f.write_str("null"),
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{}", Value::String(s.clone())),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Null => serializer.serialize_unit(),
            Id::Number(n) => n.serialize(serializer),
            Id::String(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(Id::Null),
            Value::Number(n) => Ok(Id::Number(n)),
            Value::String(s) => Ok(Id::String(s)),
            other => Err(serde::de::Error::custom(format!(
                "id must be a number, string or null, got {}",
                kind(&other)
            ))),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a line is not a well-formed JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, not an object, or a member of the wrong type.
    #[error("invalid JSON-RPC message: {0}")]
    Json(#[from] serde_json::Error),
    /// An object with neither `method` nor `result`/`error`.
    #[error("message has neither a method nor a result")]
    Unclassifiable,
    /// `params` is present but not an array.
    #[error("params must be an array, got {0}")]
    ParamsNotArray(&'static str),
}

/// A line that is not a well-formed message, with the id it carried whenever
/// that much could be read, so the error reply reaches the request that caused
/// it (JSON-RPC 2.0 §5: the id is `null` only when it cannot be determined).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ParseError {
    pub id: Id,
    pub error: FrameError,
}

/// A request or notification: a method with positional parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `Id::Null` for notifications.
    pub id: Id,
    pub method: String,
    pub params: Vec<Value>,
}

/// A reply to an earlier request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Id,
    pub result: Value,
    pub error: Value,
    /// ckpool's top-level `reject-reason` member, when present.
    pub reject_reason: Option<String>,
}

/// One line, classified by the keys present: `method` makes it a call (a request
/// if its id is non-null, else a notification); otherwise it is a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Call),
    Notification(Call),
    Response(Response),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Id,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    /// `Some` whenever the key is present, even as `null`.
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
    #[serde(default, rename = "reject-reason")]
    reject_reason: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Parses one line into a [`Message`].
///
/// # Errors
/// [`ParseError`] when the line is not a JSON object of the shape above; its id
/// is the line's `id` member when that is a number or a string.
pub fn parse(line: &str) -> Result<Message, ParseError> {
    classify(line).map_err(|error| ParseError {
        id: recover_id(line),
        error,
    })
}

fn classify(line: &str) -> Result<Message, FrameError> {
    let envelope: Envelope = serde_json::from_str(line)?;
    if let Some(method) = envelope.method {
        let params = match envelope.params {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(FrameError::ParamsNotArray(kind(&other))),
        };
        let call = Call {
            id: envelope.id,
            method,
            params,
        };
        return Ok(if call.id.is_null() {
            Message::Notification(call)
        } else {
            Message::Request(call)
        });
    }
    let has_reply_key =
        envelope.result.is_some() || envelope.error.is_some() || envelope.reject_reason.is_some();
    if !has_reply_key {
        return Err(FrameError::Unclassifiable);
    }
    Ok(Message::Response(Response {
        id: envelope.id,
        result: envelope.result.unwrap_or(Value::Null),
        error: envelope.error.unwrap_or(Value::Null),
        reject_reason: envelope.reject_reason,
    }))
}

/// The id of a line that failed to classify: read again on its own, so a
/// member of the wrong type elsewhere does not hide it. Only the error path
/// pays for this second read.
fn recover_id(line: &str) -> Id {
    let object = serde_json::from_str::<serde_json::Map<String, Value>>(line);
    match object.ok().and_then(|mut object| object.remove("id")) {
        Some(Value::Number(n)) => Id::Number(n),
        Some(Value::String(s)) => Id::String(s),
        _ => Id::Null,
    }
}

/// One message as it goes on the wire: a single JSON object and exactly one
/// `\n`.
///
/// The only way to make one is to serialize a message ([`call_line`],
/// [`result_line`], [`error_line`]), so no path can write a blank,
/// unterminated or doubly terminated line; a strict miner (cpuminer-opt)
/// drops the connection on a blank one. It dereferences to the JSON text;
/// [`WireLine::as_bytes`] is what goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WireLine(String);

impl WireLine {
    fn of(value: &Value) -> WireLine {
        // Compact JSON escapes every control character, so the text holds no `\n`.
        let mut line = value.to_string();
        line.push('\n');
        WireLine(line)
    }

    /// The bytes to write: the JSON text and its `\n`.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The JSON text without the `\n`.
    pub fn json(&self) -> &str {
        &self.0[..self.0.len() - 1]
    }
}

impl Deref for WireLine {
    type Target = str;

    fn deref(&self) -> &str {
        self.json()
    }
}

impl fmt::Display for WireLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

/// Formats a request (or, with `Id::Null`, a notification).
pub fn call_line(id: &Id, method: &str, params: &Value) -> WireLine {
    WireLine::of(&serde_json::json!({"id": id, "method": method, "params": params}))
}

/// Formats a successful response.
pub fn result_line(id: &Id, result: &Value) -> WireLine {
    WireLine::of(&serde_json::json!({"id": id, "result": result, "error": null}))
}

/// Formats an error response in the `[code, message, null]` convention.
pub fn error_line(id: &Id, error: &StratumError) -> WireLine {
    WireLine::of(&serde_json::json!({"id": id, "result": null, "error": error.to_value()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_by_keys_present() {
        let m =
            parse(r#"{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}"#).unwrap();
        assert!(
            matches!(m, Message::Request(Call { ref method, .. }) if method == "mining.subscribe")
        );
        let m = parse(r#"{"id":null,"method":"mining.notify","params":[]}"#).unwrap();
        assert!(matches!(m, Message::Notification(_)));
        let m = parse(r#"{"method":"mining.set_difficulty","params":[2]}"#).unwrap();
        assert!(matches!(m, Message::Notification(_)));
        let m = parse(r#"{"id":"xnsub","result":true,"error":null}"#).unwrap();
        assert!(
            matches!(m, Message::Response(Response { id: Id::String(ref s), .. }) if s == "xnsub")
        );
        let m = parse(r#"{"id":7,"result":null,"error":null}"#).unwrap();
        assert!(matches!(m, Message::Response(_)));
    }

    #[test]
    fn keeps_ckpool_reject_reason() {
        let m = parse(r#"{"id":4,"result":false,"error":null,"reject-reason":"Stale"}"#).unwrap();
        let Message::Response(r) = m else {
            panic!("not a response")
        };
        assert_eq!(r.reject_reason.as_deref(), Some("Stale"));
        assert_eq!(r.result, Value::Bool(false));
    }

    #[test]
    fn rejects_bad_shapes_with_reasons() {
        let error = |line: &str| parse(line).unwrap_err().error;
        assert!(matches!(error("[1,2]"), FrameError::Json(_)));
        assert!(matches!(error("{}"), FrameError::Unclassifiable));
        assert!(matches!(
            error(r#"{"id":{},"method":"x"}"#),
            FrameError::Json(_)
        ));
        assert!(matches!(
            error(r#"{"id":1,"method":"x","params":{}}"#),
            FrameError::ParamsNotArray("an object")
        ));
        assert!(matches!(
            error(r#"{"id":1,"method":5}"#),
            FrameError::Json(_)
        ));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&format!(r#"{{"id":1,"method":"x","params":{deep}}}"#)).is_err());
    }

    #[test]
    fn ids_echo_as_they_arrived() {
        for id in [
            r#"1"#,
            r#""abc""#,
            "null",
            "18446744073709551615",
            "-3",
            "1.5",
        ] {
            let line = format!(r#"{{"id":{id},"method":"m","params":[]}}"#);
            let call = match parse(&line).unwrap() {
                Message::Request(c) | Message::Notification(c) => c,
                Message::Response(_) => panic!("classified as response"),
            };
            let reply = result_line(&call.id, &Value::Bool(true));
            assert_eq!(
                reply.as_bytes(),
                format!("{{\"error\":null,\"id\":{id},\"result\":true}}\n").as_bytes()
            );
        }
    }

    #[test]
    fn errors_keep_the_id_whenever_it_can_be_read() {
        for (line, id) in [
            (
                r#"{"id":7,"method":"mining.subscribe","params":"x"}"#,
                Id::from(7),
            ),
            (
                r#"{"id":7,"method":"mining.subscribe","params":{"a":1}}"#,
                Id::from(7),
            ),
            (r#"{"id":7,"method":5,"params":[]}"#, Id::from(7)),
            (r#"{"id":7}"#, Id::from(7)),
            (
                r#"{"method":"x","id":"a","params":7}"#,
                Id::String("a".into()),
            ),
            (r#"{"id":7,"method":"x","params":[1,"#, Id::Null),
            (r#"{"id":{"a":1},"method":"x"}"#, Id::Null),
            (r#"{"id":[7],"method":5}"#, Id::Null),
            ("[7]", Id::Null),
            ("not json", Id::Null),
        ] {
            assert_eq!(parse(line).unwrap_err().id, id, "{line}");
        }
    }

    #[test]
    fn every_wire_line_is_one_json_object_and_one_newline() {
        let nasty = Value::String("a\nb\r\u{2028}\u{0}".into());
        for line in [
            call_line(&Id::Null, "m", &Value::Array(vec![nasty.clone()])),
            result_line(&Id::String("x\ny".into()), &nasty),
            error_line(
                &Id::from(1),
                &StratumError::new(crate::ErrorCode::Other, "a\nb"),
            ),
        ] {
            let bytes = line.as_bytes();
            assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert!(serde_json::from_str::<Value>(line.json())
                .unwrap()
                .is_object());
        }
    }

    proptest! {
        #[test]
        fn call_lines_round_trip(id: u64, method in "[a-z._]{1,30}", args in proptest::collection::vec("[ -~]{0,20}", 0..6)) {
            let params = Value::Array(args.iter().cloned().map(Value::String).collect());
            let line = call_line(&Id::from(id), &method, &params);
            let parsed = parse(&line).unwrap();
            prop_assert_eq!(parsed, Message::Request(Call { id: Id::from(id), method, params: args.into_iter().map(Value::String).collect() }));
        }

        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,200}") {
            let _ = parse(&line);
        }
    }
}
