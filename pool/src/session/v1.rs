//! Stratum V1: one connection of JSON lines, from first line to close, generic
//! over the stream so plain TCP, TLS and in-memory pipes run the same code. The
//! adapter parses lines and writes replies and notifies; everything else is the
//! [`Core`]'s.

use std::net::SocketAddr;
use std::sync::Arc;

use quarry_protocol::jsonrpc::{self, error_line, result_line, Call, Id, Message, WireLine};
use quarry_protocol::messages::{
    Authorize, ClientRequest, ConfigureResult, ServerMessage, Subscribe, SubscribeResult,
};
use quarry_protocol::reject::{ErrorCode, StratumError};
use quarry_protocol::{Difficulty, LineCodec};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::core::{AckDone, Core, Spent, Terms, MAX_WORKERS};
use super::drive::{drive, logged, Adapter};
use crate::accounting::now_ms;
use crate::context::Context;
use crate::jobs::{Announcement, Face};
use crate::ledger::RejectKind;
use crate::validate::Proposal;

/// A session's first read buffer: a subscribe, an authorize or a submit fits.
const READ_BUFFER: usize = 512;

/// An outgoing line: the job notify is shared by every session, replies are
/// owned. Either way a [`WireLine`], so every write is whole JSON lines.
enum Line {
    Owned(WireLine),
    Shared(Arc<WireLine>),
}

impl AsRef<[u8]> for Line {
    fn as_ref(&self) -> &[u8] {
        match self {
            Line::Owned(line) => line.as_bytes(),
            Line::Shared(line) => line.as_bytes(),
        }
    }
}

impl From<WireLine> for Line {
    fn from(line: WireLine) -> Line {
        Line::Owned(line)
    }
}

struct Session {
    core: Core<Id>,
    connected_at: Instant,
    subscribed_at: Option<Instant>,
    terms: Terms,
    out: Vec<Line>,
}

/// Serves one connection until it closes, errs, or the pool shuts down.
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let context = ctx.clone();
    logged(&context, peer, 1, |id| run(stream, peer, id, ctx)).await;
}

async fn run<S>(stream: S, peer: SocketAddr, id: u64, ctx: Arc<Context>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session {
        core: Core::new(ctx.clone(), id, peer),
        connected_at: Instant::now(),
        subscribed_at: None,
        terms: Terms::new(&ctx),
        out: Vec::new(),
    };
    // Reads go through a small buffer that grows only for a long line; writes go
    // straight to the stream (see `flush`), so an idle session holds no buffers.
    let framed = FramedRead::with_capacity(
        stream,
        LineCodec::new(ctx.config.max_line_length),
        READ_BUFFER,
    );
    drive(framed, &mut session, &ctx).await
}

impl Adapter for Session {
    type Reply = Id;
    type Codec = LineCodec;
    type Out = Line;

    fn core(&mut self) -> &mut Core<Id> {
        &mut self.core
    }

    fn deadline(&self) -> (Instant, &'static str) {
        self.deadline()
    }

    fn input(&mut self, line: String, _: &mut LineCodec) {
        self.handle_line(&line);
    }

    fn on_job(&mut self, announcement: &Arc<Announcement>, _: &mut LineCodec) -> bool {
        self.on_job(announcement)
    }

    fn finish_ack(&mut self, done: AckDone<Id>, _: &mut LineCodec) {
        self.finish_ack(done);
    }

    fn out(&mut self) -> &mut Vec<Line> {
        &mut self.out
    }
}

impl Session {
    fn reply(&mut self, id: &Id, result: Value) {
        if !id.is_null() {
            self.out.push(result_line(id, &result).into());
        }
    }

    fn reply_error(
        &mut self,
        id: &Id,
        code: ErrorCode,
        message: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        if !id.is_null() {
            self.out
                .push(error_line(id, &StratumError::new(code, message)).into());
        }
    }

    /// Spends one message of the right budget; `false` (with the ban done, or
    /// the error sent to `answer` when the message expects one) when the peer
    /// is over it.
    fn within_budget(&mut self, answer: Option<&Id>, is_submit: bool) -> bool {
        match self.core.spend(is_submit) {
            Spent::Within => true,
            Spent::Banned => false,
            Spent::Over => {
                if let Some(id) = answer {
                    let error = StratumError::new(ErrorCode::Other, "rate limit exceeded");
                    self.out.push(error_line(id, &error).into());
                }
                false
            }
        }
    }

    /// When the session times out next, and why.
    fn deadline(&self) -> (Instant, &'static str) {
        let limits = &self.core.ctx.guard.config;
        match (self.subscribed_at, self.terms.active_at) {
            (None, _) => (
                self.connected_at + limits.subscribe_timeout,
                "no mining.subscribe in time",
            ),
            (Some(at), None) => (at + limits.authorize_timeout, "no mining.authorize in time"),
            (Some(_), Some(at)) => (at + limits.idle_timeout, "idle: no share for too long"),
        }
    }

    fn handle_line(&mut self, line: &str) {
        let parsed = jsonrpc::parse(line);
        let is_submit = matches!(&parsed, Ok(Message::Request(c) | Message::Notification(c)) if c.method == "mining.submit");
        // Requests are answered, and so are lines that do not parse (under
        // their id when it can be read, else null); notifications and
        // responses are not.
        let answer = match &parsed {
            Ok(Message::Request(call)) => Some(call.id.clone()),
            Ok(Message::Notification(_) | Message::Response(_)) => None,
            Err(err) => Some(err.id.clone()),
        };
        if !self.within_budget(answer.as_ref(), is_submit) {
            return;
        }
        let call = match parsed {
            Ok(Message::Request(call) | Message::Notification(call)) => call,
            // Answers to our own requests (none need acting on).
            Ok(Message::Response(_)) => return,
            Err(err) => {
                let error = StratumError::new(ErrorCode::Other, err.to_string());
                self.out.push(error_line(&err.id, &error).into());
                return;
            }
        };
        match call.client_request() {
            Ok(request) => self.handle_request(call.id, request),
            Err(err) => {
                if call.method == "mining.submit" {
                    self.count_malformed(&call);
                }
                self.reply_error(&call.id, ErrorCode::Other, err.to_string());
            }
        }
    }

    fn count_malformed(&self, call: &Call) {
        let name = call.params.first().and_then(Value::as_str);
        if let Some(worker) = self.terms.workers.iter().find(|w| Some(&*w.name) == name) {
            let ctx = &self.core.ctx;
            ctx.accounting.record_reject(worker, RejectKind::Malformed);
            ctx.ledger
                .record_reject(&worker.name, RejectKind::Malformed, now_ms());
        }
    }

    fn handle_request(&mut self, id: Id, request: ClientRequest) {
        match request {
            ClientRequest::Configure(configure) => {
                let result =
                    ConfigureResult::negotiate(&configure, self.core.ctx.config.version_mask);
                if let Some(mask) = result.version_rolling {
                    self.terms.version_mask = mask;
                }
                if let Some(minimum) = configure.minimum_difficulty() {
                    self.suggest(minimum);
                }
                self.reply(&id, result.to_value());
            }
            ClientRequest::Subscribe(subscribe) => self.subscribe(&id, subscribe),
            ClientRequest::Authorize(authorize) => self.authorize(&id, authorize),
            ClientRequest::Submit(submit) => self.submit(id, submit),
            ClientRequest::SuggestDifficulty(difficulty) => {
                self.suggest(difficulty);
                self.reply(&id, Value::Bool(true));
            }
            ClientRequest::ExtranonceSubscribe | ClientRequest::Pong => {
                self.reply(&id, Value::Bool(true));
            }
        }
    }

    fn subscribe(&mut self, id: &Id, subscribe: Subscribe) {
        let ctx = &self.core.ctx;
        if self.terms.lease.is_none() {
            let lease = ctx.extranonces.lease(subscribe.session_id.as_deref());
            // A resumed session goes on at the difficulty it had.
            if let Some(difficulty) = lease.last_difficulty() {
                self.terms.difficulty = self.terms.vardiff.set(difficulty, Instant::now());
            }
            self.terms.lease = Some(lease);
            self.subscribed_at = Some(Instant::now());
        }
        let Some(lease) = &self.terms.lease else {
            return;
        };
        let result = SubscribeResult {
            session_id: lease.session_id(),
            extranonce1: lease.extranonce(),
            extranonce2_size: ctx.config.extranonce2_size,
        };
        self.reply(id, result.to_value());
        self.first_job();
    }

    /// The first job goes out once the session is both subscribed and
    /// authorized (as ckpool does): a difficulty suggested before then, in
    /// either order or in the password, is the one it starts at.
    fn first_job(&mut self) {
        if self.terms.last_job.is_none() {
            let current = self.core.ctx.book.current();
            self.on_job(&current);
        }
    }

    fn authorize(&mut self, id: &Id, authorize: Authorize) {
        if let Err(reason) = self
            .core
            .authorize(&mut self.terms, &authorize.username, MAX_WORKERS)
        {
            self.reply_error(id, ErrorCode::Unauthorized, reason);
            return;
        }
        // The password may carry a difficulty, "d=0.01", as many pools accept.
        if let Some(difficulty) = authorize.password.as_deref().and_then(password_difficulty) {
            self.suggest(difficulty);
        }
        self.reply(id, Value::Bool(true));
        self.first_job();
    }

    fn suggest(&mut self, difficulty: Difficulty) {
        let clamped = self.terms.vardiff.set(difficulty, Instant::now());
        if self.terms.last_job.is_some() {
            self.announce_difficulty_now();
        } else {
            // Before the first job it is simply the start.
            self.terms.difficulty = clamped;
        }
    }

    /// Sends `announcement`'s job; true when it went out as a clean job on a new tip.
    /// The session sees only the latest of jobs published in quick succession, so a
    /// job is clean for this miner when its tip differs from the last job it was sent,
    /// whatever the announcement says: a block followed at once by a refresh still
    /// reaches the miner as a clean job.
    fn on_job(&mut self, announcement: &Arc<Announcement>) -> bool {
        let terms = &mut self.terms;
        let Some(lease) = &terms.lease else {
            return false;
        };
        if terms.workers.is_empty() {
            return false;
        }
        let new_tip = terms.new_tip(announcement);
        let resuming = terms.last_job.is_none() && lease.resumed();
        terms.vardiff.on_tick(Instant::now());
        // set_difficulty precedes the first notify, and any notify after a change.
        if terms.last_job.is_none() || terms.vardiff.current() != terms.difficulty {
            self.send_difficulty();
        }
        let face = announcement.job.face(self.terms.payee.as_ref());
        if resuming {
            // The miner may have searched this job under this extranonce1
            // before the reconnect: it gets a variant of it, new work.
            self.send_variant(&face, true);
        } else {
            self.terms.remember(announcement.job.id);
            let line = if new_tip {
                &face.clean_line
            } else {
                &face.line
            };
            self.out.push(Line::Shared(line.clone()));
        }
        self.terms.last_job = Some(announcement.clone());
        self.terms.face = Some(face);
        new_tip
    }

    /// Hands the miner `face`'s job as a variant never handed to its extranonce1
    /// before.
    fn send_variant(&mut self, face: &Face, clean_jobs: bool) {
        let Some(lease) = &mut self.terms.lease else {
            return;
        };
        let (wire_id, line) = face.variant(lease.next_variant(), clean_jobs);
        self.terms.remember(wire_id);
        self.out.push(line.into());
    }

    /// Sends the difficulty vardiff wants now rather than with the next job
    /// (which may be half a minute away): `set_difficulty`, then a variant of
    /// the job the miner has, since some miners apply a new difficulty only
    /// from the next notify. A fast miner that starts far too low is raised
    /// before its share rate trips the rate limit. Nothing is sent when the
    /// difficulty did not change, and the job is not re-announced once it is
    /// void (retired or stale): the next job carries the change.
    fn announce_difficulty_now(&mut self) {
        let (Some(job), Some(face)) = (self.terms.last_job.clone(), self.terms.face.clone()) else {
            return;
        };
        if self.terms.vardiff.current() == self.terms.difficulty {
            return;
        }
        self.send_difficulty();
        if self.core.ctx.book.is_live(&job.job) {
            self.send_variant(&face, false);
        }
    }

    /// Queues `set_difficulty` with the difficulty vardiff wants.
    fn send_difficulty(&mut self) {
        let wanted = self.terms.announce_difficulty(&self.core.ctx.accounting);
        self.out.push(
            ServerMessage::SetDifficulty(wanted)
                .to_line(&Id::Null)
                .into(),
        );
    }

    fn submit(&mut self, id: Id, submit: quarry_protocol::Submit) {
        if self.terms.lease.is_none() {
            self.reply_error(&id, ErrorCode::NotSubscribed, "not subscribed");
            return;
        }
        let Some(worker) = self
            .terms
            .workers
            .iter()
            .find(|w| *w.name == *submit.worker)
            .cloned()
        else {
            self.core.unauthorized(&submit.worker);
            self.reply_error(&id, ErrorCode::Unauthorized, "unauthorized worker");
            return;
        };
        let en2_size = self.core.ctx.config.extranonce2_size;
        let answer = (!id.is_null()).then(|| id.clone());
        let proposal = Proposal::from(&submit);
        if let Err((_, error)) = self
            .core
            .judge(worker, &proposal, &self.terms, en2_size, id)
        {
            if let Some(id) = answer {
                self.out.push(error_line(&id, &error).into());
            }
        }
    }

    fn finish_ack(&mut self, done: AckDone<Id>) {
        if !self.core.committed(&done) {
            self.reply_error(
                &done.reply,
                ErrorCode::Other,
                "share not recorded: pool storage error",
            );
            return;
        }
        self.reply(&done.reply, Value::Bool(true));
        if self.terms.accepted(done.difficulty) {
            self.announce_difficulty_now();
        }
    }
}

/// Reads `d=<difficulty>` from a comma-separated password.
fn password_difficulty(password: &str) -> Option<Difficulty> {
    password
        .split(',')
        .find_map(|part| part.trim().strip_prefix("d="))
        .and_then(|d| d.parse::<f64>().ok())
        .and_then(|d| Difficulty::new(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_options() {
        assert_eq!(password_difficulty("x"), None);
        assert_eq!(password_difficulty("d=0.5").map(Difficulty::get), Some(0.5));
        assert_eq!(
            password_difficulty("foo, d=8").map(Difficulty::get),
            Some(8.0)
        );
        assert_eq!(password_difficulty("d=-1"), None);
    }
}
