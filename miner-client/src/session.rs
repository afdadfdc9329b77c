//! The client side of one Stratum connection as a plain state machine: lines from the
//! pool in, [`Action`]s out (lines to send, jobs to hash, share outcomes). No sockets,
//! no timers, so every rule is testable with strings.
//!
//! Requests go out back-to-back (configure, subscribe, authorize, optionally
//! extranonce.subscribe) and replies are matched by id against a map of what was
//! asked, so an optional request the pool never answers blocks nothing (STRATUM.md §1).
//! `set_difficulty` and `set_extranonce` take effect at the next `mining.notify` (§3).

use std::collections::BTreeMap;
use std::sync::Arc;

use quarry_protocol::fields::HexU32Be;
use quarry_protocol::jsonrpc::{self, Call, Id, Message, Response, WireLine};
use quarry_protocol::messages::{
    Authorize, Configure, ConfigureResult, Notify, ParamsError, Reconnect, Submit, Subscribe,
    SubscribeResult,
};
use quarry_protocol::{
    ClientRequest, Difficulty, ErrorCode, Extranonce, Reply, ServerMessage, StratumError,
};
use serde_json::{json, Value};

use crate::hasher::FoundShare;
use crate::job::Job;

/// The user agent sent in `mining.subscribe` and answered to `client.get_version`.
pub const USER_AGENT: &str = concat!("quarry-miner/", env!("CARGO_PKG_VERSION"));

/// Submits awaiting an answer beyond this many are forgotten, oldest first.
const MAX_PENDING: usize = 4096;

/// What the session needs to know about the miner.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub user: String,
    pub pass: String,
    /// The version-rolling mask to ask for; `None` to not send `mining.configure`.
    pub version_mask: Option<u32>,
    pub extranonce_subscribe: bool,
    /// The difficulty to suggest (`mining.suggest_difficulty`) between
    /// subscribing and authorizing, so the pool can start the session there.
    pub suggest_difficulty: Option<Difficulty>,
}

/// What the connection should do after a line (or, for a Stratum V2 session
/// ([`crate::session_v2`]), a message: `Out` is what goes to the pool).
#[derive(Debug, Clone, PartialEq)]
pub enum Action<Out = WireLine> {
    /// Write this to the pool.
    Send(Out),
    /// Hash this job from now on.
    Job(Arc<Job>),
    /// The worker is authorized: mining has started.
    Authorized,
    /// The pool refused the worker; the connection is useless.
    Unauthorized(String),
    /// The pool refused the subscription (V2: the connection setup); the
    /// connection is useless.
    SubscribeFailed(String),
    /// The pool closed the channel (V2 `CloseChannel`); the connection is useless.
    Closed(String),
    ShareAccepted {
        job_id: String,
        difficulty: f64,
    },
    ShareRejected {
        job_id: String,
        code: Option<i64>,
        reason: String,
    },
    /// `client.reconnect`: go to this host/port (or the same) after `wait_seconds`.
    Reconnect(Reconnect),
    /// `client.show_message`: tell the user.
    ShowMessage(String),
    /// A line that made no sense; logged, otherwise ignored.
    Ignored(String),
}

/// What a request id was for.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    Configure,
    Subscribe { resumed: bool },
    Authorize,
    ExtranonceSubscribe,
    SuggestDifficulty,
    Submit { job_id: String, difficulty: f64 },
}

/// The subscription the pool granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extranonces {
    extranonce1: Extranonce,
    extranonce2_size: usize,
}

/// One connection's client state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    connection: u64,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    session_id: Option<String>,
    extranonces: Option<Extranonces>,
    next_extranonces: Option<Extranonces>,
    difficulty: Difficulty,
    next_difficulty: Option<Difficulty>,
    /// The granted version-rolling mask; 0 until (unless) the pool grants one.
    version_mask: u32,
    last_job: Option<Arc<Job>>,
    jobs: u64,
    /// The generation of the last clean job: shares of older jobs are stale.
    clean_since: u64,
}

impl Session {
    /// A session for connection number `connection` (which orders job generations
    /// across connections).
    pub fn new(config: SessionConfig, connection: u64) -> Session {
        Session {
            config,
            connection,
            next_id: 1,
            pending: BTreeMap::new(),
            session_id: None,
            extranonces: None,
            next_extranonces: None,
            difficulty: Difficulty::ONE,
            next_difficulty: None,
            version_mask: 0,
            last_job: None,
            jobs: 0,
            clean_since: 0,
        }
    }

    /// The opening requests, sent together: configure (if wanted), subscribe (resuming
    /// `resume` if given), authorize, extranonce.subscribe (if wanted).
    pub fn start(&mut self, resume: Option<String>) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(mask) = self.config.version_mask {
            let mut params = serde_json::Map::new();
            params.insert(
                "version-rolling.mask".into(),
                json!(HexU32Be(mask).to_string()),
            );
            params.insert("version-rolling.min-bit-count".into(), json!(2));
            let request = ClientRequest::Configure(Configure {
                extensions: vec!["version-rolling".into()],
                params,
            });
            out.push(self.request(request, Pending::Configure));
        }
        out.push(self.subscribe(resume));
        if let Some(difficulty) = self.config.suggest_difficulty {
            out.push(self.request(
                ClientRequest::SuggestDifficulty(difficulty),
                Pending::SuggestDifficulty,
            ));
        }
        let authorize = ClientRequest::Authorize(Authorize {
            username: self.config.user.clone(),
            password: Some(self.config.pass.clone()),
        });
        out.push(self.request(authorize, Pending::Authorize));
        if self.config.extranonce_subscribe {
            out.push(self.request(
                ClientRequest::ExtranonceSubscribe,
                Pending::ExtranonceSubscribe,
            ));
        }
        out
    }

    /// The session id to resume on the next connection to the same pool.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The newest job, once one has arrived.
    pub fn last_job(&self) -> Option<&Arc<Job>> {
        self.last_job.as_ref()
    }

    /// Handles one line from the pool.
    pub fn handle_line(&mut self, line: &str) -> Vec<Action> {
        match jsonrpc::parse(line) {
            Ok(Message::Response(response)) => self.handle_response(&response),
            Ok(Message::Request(call)) | Ok(Message::Notification(call)) => self.handle_call(&call),
            Err(error) => vec![Action::Ignored(format!("{error}: {}", excerpt(line)))],
        }
    }

    /// The `mining.submit` line for `share`, or `None` when its job is void: cleaned
    /// since, or from another connection whose extranonce1 or previous block differ.
    /// `same_pool` says whether a share from an earlier connection came from this pool.
    pub fn submit(&mut self, share: &FoundShare, same_pool: bool) -> Option<WireLine> {
        let job = &share.job;
        let valid = if job.connection == self.connection {
            job.generation >= self.clean_since
        } else {
            let current = self.last_job.as_ref()?;
            same_pool
                && current.extranonce1 == job.extranonce1
                && current.notify.prevhash == job.notify.prevhash
        };
        if !valid {
            return None;
        }
        let version_bits =
            (job.version_mask != 0).then(|| HexU32Be(job.version(&share.unit) & job.version_mask));
        let request = ClientRequest::Submit(Submit {
            worker: self.config.user.clone(),
            job_id: job.notify.job_id.clone(),
            extranonce2: share.unit.extranonce2,
            ntime: HexU32Be(share.ntime),
            nonce: HexU32Be(share.nonce),
            version_bits,
        });
        let pending = Pending::Submit {
            job_id: job.notify.job_id.to_string(),
            difficulty: job.difficulty.get(),
        };
        Some(self.request_line(request, pending))
    }

    fn subscribe(&mut self, resume: Option<String>) -> Action {
        let resumed = resume.is_some();
        let request = ClientRequest::Subscribe(Subscribe {
            user_agent: Some(USER_AGENT.to_owned()),
            session_id: resume,
        });
        self.request(request, Pending::Subscribe { resumed })
    }

    fn request(&mut self, request: ClientRequest, pending: Pending) -> Action {
        Action::Send(self.request_line(request, pending))
    }

    /// Formats `request` under a fresh id and remembers what the id asked.
    fn request_line(&mut self, request: ClientRequest, pending: Pending) -> WireLine {
        let id = self.next_id;
        self.next_id += 1;
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_first();
        }
        self.pending.insert(id, pending);
        request.to_line(&Id::from(id))
    }

    fn handle_response(&mut self, response: &Response) -> Vec<Action> {
        let pending = match &response.id {
            Id::Number(n) => n.as_u64().and_then(|id| self.pending.remove(&id)),
            _ => None,
        };
        let Some(pending) = pending else {
            return vec![Action::Ignored(format!(
                "reply to unknown id {}",
                response.id
            ))];
        };
        let reply = Reply::from_response(response);
        match (pending, reply) {
            (Pending::Configure, Reply::Accepted(result)) => {
                let granted = ConfigureResult::from_value(&result).version_rolling;
                let requested = self.config.version_mask.unwrap_or(0);
                self.version_mask = granted.map_or(0, |mask| mask & requested);
                if self.version_mask == 0 {
                    vec![Action::Ignored("pool declined version rolling".into())]
                } else {
                    vec![]
                }
            }
            (Pending::Configure, Reply::Rejected { reason, .. }) => {
                vec![Action::Ignored(format!(
                    "mining.configure refused: {reason}"
                ))]
            }
            (Pending::Subscribe { .. }, Reply::Accepted(result)) => {
                match SubscribeResult::from_value(&result) {
                    Ok(subscribed) => {
                        self.session_id = Some(subscribed.session_id).filter(|s| !s.is_empty());
                        self.extranonces = Some(Extranonces {
                            extranonce1: subscribed.extranonce1,
                            extranonce2_size: subscribed.extranonce2_size,
                        });
                        vec![]
                    }
                    Err(error) => vec![Action::SubscribeFailed(error.to_string())],
                }
            }
            // cpuminer: a pool that cannot resume may refuse; retry once without.
            (Pending::Subscribe { resumed: true }, Reply::Rejected { .. }) => {
                vec![self.subscribe(None)]
            }
            (Pending::Subscribe { resumed: false }, Reply::Rejected { reason, .. }) => {
                vec![Action::SubscribeFailed(reason)]
            }
            (Pending::Authorize, Reply::Accepted(Value::Bool(true))) => vec![Action::Authorized],
            (Pending::Authorize, Reply::Accepted(other)) => {
                vec![Action::Unauthorized(format!("unexpected result {other}"))]
            }
            (Pending::Authorize, Reply::Rejected { reason, .. }) => {
                vec![Action::Unauthorized(reason)]
            }
            (Pending::ExtranonceSubscribe | Pending::SuggestDifficulty, Reply::Accepted(_)) => {
                vec![]
            }
            // A pool that does not take suggestions keeps its own difficulty.
            (Pending::SuggestDifficulty, Reply::Rejected { reason, .. }) => {
                vec![Action::Ignored(format!(
                    "mining.suggest_difficulty refused: {reason}"
                ))]
            }
            (Pending::ExtranonceSubscribe, Reply::Rejected { reason, .. }) => {
                vec![Action::Ignored(format!(
                    "mining.extranonce.subscribe refused: {reason}"
                ))]
            }
            (Pending::Submit { job_id, difficulty }, Reply::Accepted(_)) => {
                vec![Action::ShareAccepted { job_id, difficulty }]
            }
            (Pending::Submit { job_id, .. }, Reply::Rejected { code, reason }) => {
                vec![Action::ShareRejected {
                    job_id,
                    code,
                    reason,
                }]
            }
        }
    }

    fn handle_call(&mut self, call: &Call) -> Vec<Action> {
        let message = match call.server_message() {
            Ok(message) => message,
            Err(error) => {
                let mut out = vec![Action::Ignored(format!(
                    "{}: {error}",
                    excerpt(&call.method)
                ))];
                if !call.id.is_null() {
                    let code = if matches!(error, ParamsError::UnknownMethod(_)) {
                        "unknown method"
                    } else {
                        "invalid parameters"
                    };
                    let error = StratumError::new(ErrorCode::Other, code);
                    out.push(Action::Send(jsonrpc::error_line(&call.id, &error)));
                }
                return out;
            }
        };
        let reply = |result: Value| Action::Send(jsonrpc::result_line(&call.id, &result));
        match message {
            ServerMessage::Notify(notify) => self.notify(notify),
            ServerMessage::SetDifficulty(difficulty) => {
                self.next_difficulty = Some(difficulty);
                vec![]
            }
            ServerMessage::SetExtranonce {
                extranonce1,
                extranonce2_size,
            } => {
                self.next_extranonces = Some(Extranonces {
                    extranonce1,
                    extranonce2_size,
                });
                vec![]
            }
            ServerMessage::SetVersionMask(mask) => {
                self.version_mask = mask.0 & self.config.version_mask.unwrap_or(0);
                // Bits outside the new mask are invalid from now on: re-issue the
                // current work as clean under the new mask.
                match self.last_job.clone() {
                    Some(job) => {
                        let mut notify = job.notify.clone();
                        notify.clean_jobs = true;
                        self.publish(
                            notify,
                            job.extranonce1,
                            job.extranonce2_size,
                            job.difficulty,
                        )
                    }
                    None => vec![],
                }
            }
            ServerMessage::Reconnect(target) => vec![Action::Reconnect(target)],
            ServerMessage::ShowMessage(text) => {
                let mut out = vec![Action::ShowMessage(text)];
                if !call.id.is_null() {
                    out.push(reply(Value::Bool(true)));
                }
                out
            }
            ServerMessage::GetVersion => vec![reply(json!(USER_AGENT))],
            ServerMessage::Ping => vec![reply(json!("pong"))],
        }
    }

    fn notify(&mut self, notify: Notify) -> Vec<Action> {
        if let Some(next) = self.next_extranonces.take() {
            self.extranonces = Some(next);
        }
        if let Some(next) = self.next_difficulty.take() {
            self.difficulty = next;
        }
        let Some(extranonces) = self.extranonces else {
            return vec![Action::Ignored(
                "mining.notify before the subscription".into(),
            )];
        };
        self.publish(
            notify,
            extranonces.extranonce1,
            extranonces.extranonce2_size,
            self.difficulty,
        )
    }

    fn publish(
        &mut self,
        notify: Notify,
        en1: Extranonce,
        en2_size: usize,
        difficulty: Difficulty,
    ) -> Vec<Action> {
        self.jobs += 1;
        let generation = (self.connection << 32) | self.jobs;
        let clean = notify.clean_jobs;
        let job = Arc::new(Job::new(
            generation,
            self.connection,
            notify,
            en1,
            en2_size,
            difficulty,
            self.version_mask,
        ));
        if clean {
            self.clean_since = generation;
        }
        self.last_job = Some(Arc::clone(&job));
        vec![Action::Job(job)]
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests;
