//! Typed Stratum V1 messages in both directions, each parsed from and formatted
//! to the positional `params` of a [`Call`](crate::jsonrpc::Call).
//!
//! Client → server: [`ClientRequest`]. Server → client: [`ServerMessage`].
//! Replies with a shape of their own: [`SubscribeResult`], [`ConfigureResult`].

use serde_json::{Map, Value};

use crate::fields::{Extranonce, FieldError, HexBytes, HexU32Be, JobId, PrevHash, RawHash};
use crate::jsonrpc::{call_line, Call, Id, WireLine};
use crate::target::{Difficulty, DifficultyError};

/// A call whose parameters do not fit its method; names the method and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// A method this side does not know.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// A required parameter is absent.
    #[error("{method}: missing parameter {index} ({name})")]
    Missing {
        method: &'static str,
        index: usize,
        name: &'static str,
    },
    /// A parameter has the wrong JSON type.
    #[error("{method}: parameter {index} ({name}) must be {expected}")]
    Type {
        method: &'static str,
        index: usize,
        name: &'static str,
        expected: &'static str,
    },
    /// A parameter is of the right type but does not parse.
    #[error("{method}: parameter {index} ({name}): {source}")]
    Field {
        method: &'static str,
        index: usize,
        name: &'static str,
        source: FieldError,
    },
    /// A string that should hold a number but does not; quotes the string.
    #[error(
        "{method}: parameter {index} ({name}) must be a number or a numeric string, got {input:?}"
    )]
    NotNumeric {
        method: &'static str,
        index: usize,
        name: &'static str,
        input: String,
    },
    /// A difficulty that is not a finite positive number.
    #[error("{method}: {source}")]
    Difficulty {
        method: &'static str,
        source: DifficultyError,
    },
}

/// Positional access to `params` with errors that name the method and parameter.
struct Params<'a> {
    method: &'static str,
    items: &'a [Value],
}

impl<'a> Params<'a> {
    fn get(&self, index: usize, name: &'static str) -> Result<&'a Value, ParamsError> {
        match self.items.get(index) {
            Some(value) => Ok(value),
            None => Err(ParamsError::Missing {
                method: self.method,
                index,
                name,
            }),
        }
    }

    fn optional(&self, index: usize) -> Option<&'a Value> {
        self.items.get(index).filter(|v| !v.is_null())
    }

    fn type_error(&self, index: usize, name: &'static str, expected: &'static str) -> ParamsError {
        ParamsError::Type {
            method: self.method,
            index,
            name,
            expected,
        }
    }

    fn str(&self, index: usize, name: &'static str) -> Result<&'a str, ParamsError> {
        self.get(index, name)?
            .as_str()
            .ok_or_else(|| self.type_error(index, name, "a string"))
    }

    fn optional_str(
        &self,
        index: usize,
        name: &'static str,
    ) -> Result<Option<&'a str>, ParamsError> {
        match self.optional(index) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.type_error(index, name, "a string")),
        }
    }

    fn parse<T>(&self, index: usize, name: &'static str) -> Result<T, ParamsError>
    where
        T: std::str::FromStr<Err = FieldError>,
    {
        self.str(index, name)?
            .parse()
            .map_err(|source| ParamsError::Field {
                method: self.method,
                index,
                name,
                source,
            })
    }

    fn u64(&self, index: usize, name: &'static str) -> Result<u64, ParamsError> {
        self.get(index, name)?
            .as_u64()
            .ok_or_else(|| self.type_error(index, name, "a non-negative integer"))
    }

    /// A number sent as a JSON number or a numeric string.
    fn number(&self, index: usize, name: &'static str) -> Result<f64, ParamsError> {
        match self.get(index, name)? {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| self.type_error(index, name, "a number or a numeric string")),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| ParamsError::NotNumeric {
                    method: self.method,
                    index,
                    name,
                    input: truncate(s),
                }),
            _ => Err(self.type_error(index, name, "a number or a numeric string")),
        }
    }

    /// A difficulty sent as a number or a numeric string.
    fn difficulty(&self, index: usize, name: &'static str) -> Result<Difficulty, ParamsError> {
        let number = self.number(index, name)?;
        Difficulty::new(number).map_err(|source| ParamsError::Difficulty {
            method: self.method,
            source,
        })
    }
}

/// `mining.configure` (BIP310): requested extensions and their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Configure {
    pub extensions: Vec<String>,
    pub params: Map<String, Value>,
}

/// What a miner asked of the `version-rolling` extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRollingRequest {
    /// The miner's mask; `ffffffff` when omitted (BIP310).
    pub mask: u32,
    pub min_bit_count: u32,
}

impl Configure {
    /// The version-rolling request, if the miner made one.
    pub fn version_rolling(&self) -> Option<VersionRollingRequest> {
        if !self.extensions.iter().any(|e| e == "version-rolling") {
            return None;
        }
        let mask = self
            .params
            .get("version-rolling.mask")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<HexU32Be>().ok())
            .map_or(u32::MAX, |m| m.0);
        let min_bit_count = self
            .params
            .get("version-rolling.min-bit-count")
            .and_then(Value::as_u64)
            .map_or(0, |n| n.min(32) as u32);
        Some(VersionRollingRequest {
            mask,
            min_bit_count,
        })
    }

    /// The `minimum-difficulty.value` parameter, if requested and valid.
    pub fn minimum_difficulty(&self) -> Option<Difficulty> {
        if !self.extensions.iter().any(|e| e == "minimum-difficulty") {
            return None;
        }
        self.params
            .get("minimum-difficulty.value")
            .and_then(Value::as_f64)
            .and_then(|d| Difficulty::new(d).ok())
    }
}

/// The pool's answer to `mining.configure`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigureResult {
    /// The granted version-rolling mask, `None` if version rolling was not requested.
    pub version_rolling: Option<u32>,
    /// Other requested extensions, answered `false`.
    pub declined: Vec<String>,
}

impl ConfigureResult {
    /// Answers `request` for a pool whose own mask is `pool_mask`: the granted mask is
    /// `pool_mask & miner_mask` (BIP310), and any other extension is declined.
    pub fn negotiate(request: &Configure, pool_mask: u32) -> Self {
        let version_rolling = request.version_rolling().map(|r| r.mask & pool_mask);
        let declined = request
            .extensions
            .iter()
            .filter(|e| *e != "version-rolling")
            .take(16)
            .cloned()
            .collect();
        Self {
            version_rolling,
            declined,
        }
    }

    /// The result object.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        if let Some(mask) = self.version_rolling {
            map.insert("version-rolling".into(), Value::Bool(true));
            map.insert(
                "version-rolling.mask".into(),
                Value::String(HexU32Be(mask).to_string()),
            );
        }
        for ext in &self.declined {
            map.insert(ext.clone(), Value::Bool(false));
        }
        Value::Object(map)
    }

    /// Reads a pool's result object (client side).
    pub fn from_value(value: &Value) -> Self {
        let Some(map) = value.as_object() else {
            return Self::default();
        };
        let granted = map.get("version-rolling").and_then(Value::as_bool) == Some(true);
        let version_rolling = map
            .get("version-rolling.mask")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<HexU32Be>().ok())
            .filter(|_| granted)
            .map(|m| m.0);
        let declined = map
            .iter()
            .filter(|(k, v)| !k.contains('.') && v.as_bool() == Some(false))
            .map(|(k, _)| k.clone())
            .collect();
        Self {
            version_rolling,
            declined,
        }
    }
}

/// `mining.subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    pub user_agent: Option<String>,
    /// A session id from an earlier subscribe, to resume its extranonce1.
    pub session_id: Option<String>,
}

/// The result of `mining.subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeResult {
    /// The id clients keep to resume the session (the `mining.notify` subscription id).
    pub session_id: String,
    pub extranonce1: Extranonce,
    pub extranonce2_size: usize,
}

impl SubscribeResult {
    /// `[[["mining.set_difficulty", id], ["mining.notify", id]], extranonce1, size]`.
    pub fn to_value(&self) -> Value {
        serde_json::json!([
            [
                ["mining.set_difficulty", self.session_id],
                ["mining.notify", self.session_id]
            ],
            self.extranonce1.to_string(),
            self.extranonce2_size
        ])
    }

    /// Reads a pool's subscribe result (client side).
    ///
    /// # Errors
    /// [`ParamsError`] when the result does not have the three-element shape.
    pub fn from_value(value: &Value) -> Result<Self, ParamsError> {
        const METHOD: &str = "mining.subscribe result";
        let items = value.as_array().ok_or(ParamsError::Type {
            method: METHOD,
            index: 0,
            name: "result",
            expected: "an array",
        })?;
        let params = Params {
            method: METHOD,
            items,
        };
        let session_id =
            find_notify_subscription(params.get(0, "subscriptions")?).unwrap_or_default();
        let extranonce1 = params.parse(1, "extranonce1")?;
        let extranonce2_size = params.u64(2, "extranonce2_size")? as usize;
        if extranonce2_size > Extranonce::MAX_LEN {
            return Err(params.type_error(2, "extranonce2_size", "at most 32"));
        }
        Ok(Self {
            session_id,
            extranonce1,
            extranonce2_size,
        })
    }
}

/// Scans the subscription pairs for `mining.notify` (the shape of ckpool and
/// node-stratum-pool differ; both carry that pair).
fn find_notify_subscription(subscriptions: &Value) -> Option<String> {
    let pairs = subscriptions.as_array()?;
    let is_pair = |v: &Value| {
        v.as_array()
            .is_some_and(|p| p.first().is_some_and(Value::is_string))
    };
    let pairs: Vec<&Value> = if is_pair(subscriptions) {
        vec![subscriptions]
    } else {
        pairs.iter().collect()
    };
    pairs.into_iter().find_map(|pair| {
        let pair = pair.as_array()?;
        (pair.first()?.as_str()? == "mining.notify")
            .then(|| pair.get(1)?.as_str().map(str::to_owned))?
    })
}

/// `mining.authorize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    pub username: String,
    pub password: Option<String>,
}

/// `mining.submit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    pub worker: String,
    pub job_id: JobId,
    /// Any even-length hex up to 32 bytes; the session checks its exact size.
    pub extranonce2: Extranonce,
    pub ntime: HexU32Be,
    pub nonce: HexU32Be,
    /// BIP310 version bits, sent only when version rolling was negotiated.
    pub version_bits: Option<HexU32Be>,
}

/// A request or notification from a miner to a pool.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Configure(Configure),
    Subscribe(Subscribe),
    Authorize(Authorize),
    Submit(Submit),
    SuggestDifficulty(Difficulty),
    ExtranonceSubscribe,
    /// ESP-Miner answers pings with a request-shaped `pong`.
    Pong,
}

impl ClientRequest {
    /// Parses a call from a miner.
    ///
    /// # Errors
    /// [`ParamsError`] for unknown methods or parameters that do not fit.
    pub fn parse(method: &str, params: &[Value]) -> Result<Self, ParamsError> {
        Ok(match method {
            "mining.configure" => {
                let p = Params {
                    method: "mining.configure",
                    items: params,
                };
                let extensions = p
                    .get(0, "extensions")?
                    .as_array()
                    .ok_or_else(|| p.type_error(0, "extensions", "an array of strings"))?
                    .iter()
                    .map(|e| e.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| p.type_error(0, "extensions", "an array of strings"))?;
                let params = match p.optional(1) {
                    None => Map::new(),
                    Some(Value::Object(map)) => map.clone(),
                    Some(_) => return Err(p.type_error(1, "extension parameters", "an object")),
                };
                ClientRequest::Configure(Configure { extensions, params })
            }
            "mining.subscribe" => {
                let p = Params {
                    method: "mining.subscribe",
                    items: params,
                };
                ClientRequest::Subscribe(Subscribe {
                    user_agent: p.optional_str(0, "user agent")?.map(str::to_owned),
                    session_id: p.optional_str(1, "session id")?.map(str::to_owned),
                })
            }
            "mining.authorize" => {
                let p = Params {
                    method: "mining.authorize",
                    items: params,
                };
                ClientRequest::Authorize(Authorize {
                    username: p.str(0, "username")?.to_owned(),
                    // `params()` sends "" for no password, so "" reads back as none.
                    password: p
                        .optional_str(1, "password")?
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                })
            }
            "mining.submit" => {
                let p = Params {
                    method: "mining.submit",
                    items: params,
                };
                let version_bits = match p.optional(5) {
                    None => None,
                    Some(_) => Some(p.parse(5, "version bits")?),
                };
                ClientRequest::Submit(Submit {
                    worker: p.str(0, "worker")?.to_owned(),
                    job_id: p.parse(1, "job id")?,
                    extranonce2: p.parse(2, "extranonce2")?,
                    ntime: p.parse(3, "ntime")?,
                    nonce: p.parse(4, "nonce")?,
                    version_bits,
                })
            }
            "mining.suggest_difficulty" => {
                let p = Params {
                    method: "mining.suggest_difficulty",
                    items: params,
                };
                ClientRequest::SuggestDifficulty(p.difficulty(0, "difficulty")?)
            }
            "mining.extranonce.subscribe" => ClientRequest::ExtranonceSubscribe,
            "pong" | "mining.pong" => ClientRequest::Pong,
            other => return Err(ParamsError::UnknownMethod(truncate(other))),
        })
    }

    /// The method name.
    pub fn method(&self) -> &'static str {
        match self {
            ClientRequest::Configure(_) => "mining.configure",
            ClientRequest::Subscribe(_) => "mining.subscribe",
            ClientRequest::Authorize(_) => "mining.authorize",
            ClientRequest::Submit(_) => "mining.submit",
            ClientRequest::SuggestDifficulty(_) => "mining.suggest_difficulty",
            ClientRequest::ExtranonceSubscribe => "mining.extranonce.subscribe",
            ClientRequest::Pong => "pong",
        }
    }

    /// The positional parameters.
    pub fn params(&self) -> Value {
        match self {
            ClientRequest::Configure(c) => {
                serde_json::json!([c.extensions, Value::Object(c.params.clone())])
            }
            ClientRequest::Subscribe(s) => match (&s.user_agent, &s.session_id) {
                (None, None) => serde_json::json!([]),
                (None, Some(session)) => serde_json::json!([null, session]),
                (Some(agent), None) => serde_json::json!([agent]),
                (Some(agent), Some(session)) => serde_json::json!([agent, session]),
            },
            ClientRequest::Authorize(a) => {
                serde_json::json!([a.username, a.password.clone().unwrap_or_default()])
            }
            ClientRequest::Submit(s) => {
                let mut params =
                    serde_json::json!([s.worker, s.job_id, s.extranonce2, s.ntime, s.nonce]);
                if let (Some(bits), Some(items)) = (s.version_bits, params.as_array_mut()) {
                    items.push(Value::String(bits.to_string()));
                }
                params
            }
            ClientRequest::SuggestDifficulty(d) => serde_json::json!([d.get()]),
            ClientRequest::ExtranonceSubscribe | ClientRequest::Pong => serde_json::json!([]),
        }
    }

    /// The whole request line.
    pub fn to_line(&self, id: &Id) -> WireLine {
        call_line(id, self.method(), &self.params())
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// `mining.notify`: one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub job_id: JobId,
    pub prevhash: PrevHash,
    /// Coinbase bytes before extranonce1.
    pub coinb1: HexBytes,
    /// Coinbase bytes after extranonce2.
    pub coinb2: HexBytes,
    /// Raw sha256d siblings of the coinbase, bottom-up.
    pub merkle_branch: Vec<RawHash>,
    pub version: HexU32Be,
    pub nbits: HexU32Be,
    pub ntime: HexU32Be,
    /// Previous jobs are void.
    pub clean_jobs: bool,
}

/// `client.reconnect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub wait_seconds: u64,
}

/// A message from a pool to a miner.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Notify(Notify),
    SetDifficulty(Difficulty),
    SetExtranonce {
        extranonce1: Extranonce,
        extranonce2_size: usize,
    },
    SetVersionMask(HexU32Be),
    Reconnect(Reconnect),
    ShowMessage(String),
    GetVersion,
    Ping,
}

impl ServerMessage {
    /// Parses a call from a pool.
    ///
    /// # Errors
    /// [`ParamsError`] for unknown methods or parameters that do not fit.
    pub fn parse(method: &str, params: &[Value]) -> Result<Self, ParamsError> {
        Ok(match method {
            "mining.notify" => {
                let p = Params {
                    method: "mining.notify",
                    items: params,
                };
                let branch = p
                    .get(4, "merkle_branch")?
                    .as_array()
                    .ok_or_else(|| p.type_error(4, "merkle_branch", "an array"))?;
                let merkle_branch = branch
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .ok_or_else(|| p.type_error(4, "merkle_branch", "an array of strings"))?
                            .parse()
                            .map_err(|source| ParamsError::Field {
                                method: "mining.notify",
                                index: 4,
                                name: "merkle_branch",
                                source,
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ServerMessage::Notify(Notify {
                    job_id: p.parse(0, "job_id")?,
                    prevhash: p.parse(1, "prevhash")?,
                    coinb1: p.parse(2, "coinb1")?,
                    coinb2: p.parse(3, "coinb2")?,
                    merkle_branch,
                    version: p.parse(5, "version")?,
                    nbits: p.parse(6, "nbits")?,
                    ntime: p.parse(7, "ntime")?,
                    clean_jobs: p
                        .get(8, "clean_jobs")?
                        .as_bool()
                        .ok_or_else(|| p.type_error(8, "clean_jobs", "a boolean"))?,
                })
            }
            "mining.set_difficulty" => {
                let p = Params {
                    method: "mining.set_difficulty",
                    items: params,
                };
                ServerMessage::SetDifficulty(p.difficulty(0, "difficulty")?)
            }
            "mining.set_extranonce" => {
                let p = Params {
                    method: "mining.set_extranonce",
                    items: params,
                };
                let extranonce2_size = p.u64(1, "extranonce2_size")?;
                if extranonce2_size as usize > Extranonce::MAX_LEN {
                    return Err(p.type_error(1, "extranonce2_size", "at most 32"));
                }
                ServerMessage::SetExtranonce {
                    extranonce1: p.parse(0, "extranonce1")?,
                    extranonce2_size: extranonce2_size as usize,
                }
            }
            "mining.set_version_mask" => {
                let p = Params {
                    method: "mining.set_version_mask",
                    items: params,
                };
                ServerMessage::SetVersionMask(p.parse(0, "mask")?)
            }
            "client.reconnect" => {
                let p = Params {
                    method: "client.reconnect",
                    items: params,
                };
                let port = match p.optional(1) {
                    None => None,
                    Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    Some(Value::String(s)) => s.parse().ok(),
                    Some(_) => None,
                };
                let port = match (p.optional(1), port) {
                    (Some(_), None) => return Err(p.type_error(1, "port", "a port number")),
                    (_, port) => port,
                };
                ServerMessage::Reconnect(Reconnect {
                    host: p.optional_str(0, "host")?.map(str::to_owned),
                    port,
                    wait_seconds: match p.optional(2) {
                        None => 0,
                        Some(Value::String(s)) => s.trim().parse().map_err(|_| {
                            p.type_error(2, "wait_seconds", "a non-negative integer")
                        })?,
                        Some(_) => p.u64(2, "wait_seconds")?,
                    },
                })
            }
            "client.show_message" => {
                let p = Params {
                    method: "client.show_message",
                    items: params,
                };
                ServerMessage::ShowMessage(p.str(0, "message")?.to_owned())
            }
            "client.get_version" => ServerMessage::GetVersion,
            "mining.ping" => ServerMessage::Ping,
            other => return Err(ParamsError::UnknownMethod(truncate(other))),
        })
    }

    /// The method name.
    pub fn method(&self) -> &'static str {
        match self {
            ServerMessage::Notify(_) => "mining.notify",
            ServerMessage::SetDifficulty(_) => "mining.set_difficulty",
            ServerMessage::SetExtranonce { .. } => "mining.set_extranonce",
            ServerMessage::SetVersionMask(_) => "mining.set_version_mask",
            ServerMessage::Reconnect(_) => "client.reconnect",
            ServerMessage::ShowMessage(_) => "client.show_message",
            ServerMessage::GetVersion => "client.get_version",
            ServerMessage::Ping => "mining.ping",
        }
    }

    /// The positional parameters.
    pub fn params(&self) -> Value {
        match self {
            ServerMessage::Notify(n) => serde_json::json!([
                n.job_id,
                n.prevhash,
                n.coinb1,
                n.coinb2,
                n.merkle_branch,
                n.version,
                n.nbits,
                n.ntime,
                n.clean_jobs
            ]),
            ServerMessage::SetDifficulty(d) => serde_json::json!([d.get()]),
            ServerMessage::SetExtranonce {
                extranonce1,
                extranonce2_size,
            } => serde_json::json!([extranonce1, extranonce2_size]),
            ServerMessage::SetVersionMask(mask) => serde_json::json!([mask]),
            ServerMessage::Reconnect(r) => match (&r.host, r.port, r.wait_seconds) {
                (None, None, 0) => serde_json::json!([]),
                (host, port, wait) => serde_json::json!([host, port, wait]),
            },
            ServerMessage::ShowMessage(text) => serde_json::json!([text]),
            ServerMessage::GetVersion | ServerMessage::Ping => serde_json::json!([]),
        }
    }

    /// The whole line: a notification, or for `get_version` and `ping` (which
    /// expect an answer) a request with `id`.
    pub fn to_line(&self, id: &Id) -> WireLine {
        call_line(id, self.method(), &self.params())
    }
}

impl Call {
    /// Parses this call as a miner's request.
    ///
    /// # Errors
    /// See [`ClientRequest::parse`].
    pub fn client_request(&self) -> Result<ClientRequest, ParamsError> {
        ClientRequest::parse(&self.method, &self.params)
    }

    /// Parses this call as a pool's message.
    ///
    /// # Errors
    /// See [`ServerMessage::parse`].
    pub fn server_message(&self) -> Result<ServerMessage, ParamsError> {
        ServerMessage::parse(&self.method, &self.params)
    }
}
