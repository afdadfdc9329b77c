//! Stratum error codes 20–25 and the three reject encodings found in the field.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use crate::jsonrpc::Response;

/// The error codes of slush's convention (STRATUM.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Other = 20,
    JobNotFound = 21,
    Duplicate = 22,
    LowDifficulty = 23,
    Unauthorized = 24,
    NotSubscribed = 25,
}

/// An error reply: `[code, message, null]` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StratumError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl StratumError {
    /// Builds an error with a message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The `[code, message, null]` JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::json!([self.code as i64, self.message, null])
    }
}

impl fmt::Display for StratumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code as i64)
    }
}

/// How a pool answered a request, read from any of the three encodings:
/// `[code, message, traceback]`, a plain string error, or `result:false` with a
/// `reject-reason` member (ckpool). `result:null` without an error (node-stratum-pool)
/// is a rejection too.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Accepted(Value),
    Rejected { code: Option<i64>, reason: String },
}

impl Reply {
    /// Reads a response.
    pub fn from_response(response: &Response) -> Reply {
        match &response.error {
            Value::Null => {}
            Value::Array(items) => {
                let code = items.first().and_then(Value::as_i64);
                let reason = match items.get(1) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "unknown error".to_owned(),
                };
                return Reply::Rejected { code, reason };
            }
            Value::String(s) => return parse_string_error(s),
            Value::Object(map) => {
                let code = map.get("code").and_then(Value::as_i64);
                let reason = map
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned();
                return Reply::Rejected { code, reason };
            }
            other => {
                return Reply::Rejected {
                    code: None,
                    reason: other.to_string(),
                }
            }
        }
        if let Some(reason) = &response.reject_reason {
            return Reply::Rejected {
                code: None,
                reason: reason.clone(),
            };
        }
        match &response.result {
            Value::Null | Value::Bool(false) => Reply::Rejected {
                code: None,
                reason: "rejected without a reason".to_owned(),
            },
            accepted => Reply::Accepted(accepted.clone()),
        }
    }
}

/// ckpool strings such as `"-1:params not found"` carry a code before the colon.
fn parse_string_error(text: &str) -> Reply {
    if let Some((code, reason)) = text.split_once(':') {
        if let Ok(code) = code.trim().parse::<i64>() {
            return Reply::Rejected {
                code: Some(code),
                reason: reason.to_owned(),
            };
        }
    }
    Reply::Rejected {
        code: None,
        reason: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{parse, Message};

    fn reply(line: &str) -> Reply {
        match parse(line).unwrap() {
            Message::Response(r) => Reply::from_response(&r),
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn reads_all_three_reject_encodings() {
        assert_eq!(
            reply(r#"{"id":1,"result":null,"error":[23,"low difficulty share",null]}"#),
            Reply::Rejected {
                code: Some(23),
                reason: "low difficulty share".into()
            }
        );
        assert_eq!(
            reply(r#"{"id":1,"result":false,"error":"No nonce"}"#),
            Reply::Rejected {
                code: None,
                reason: "No nonce".into()
            }
        );
        assert_eq!(
            reply(r#"{"id":1,"result":false,"error":"-1:params not found"}"#),
            Reply::Rejected {
                code: Some(-1),
                reason: "params not found".into()
            }
        );
        assert_eq!(
            reply(r#"{"id":1,"result":false,"error":null,"reject-reason":"Stale"}"#),
            Reply::Rejected {
                code: None,
                reason: "Stale".into()
            }
        );
        assert!(matches!(
            reply(r#"{"id":1,"result":null,"error":null}"#),
            Reply::Rejected { .. }
        ));
        assert_eq!(
            reply(r#"{"id":1,"result":true,"error":null}"#),
            Reply::Accepted(Value::Bool(true))
        );
    }

    #[test]
    fn server_form_is_code_message_null() {
        let e = StratumError::new(ErrorCode::JobNotFound, "job not found");
        assert_eq!(e.to_value().to_string(), r#"[21,"job not found",null]"#);
    }
}
