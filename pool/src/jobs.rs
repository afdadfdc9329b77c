//! The job book: every job the pool has handed out that shares may still name,
//! and the fan-out of new jobs to every session.
//!
//! A job is serialized once into its `mining.notify` line and shared by all
//! sessions through a `watch` channel: the latest job wins, and a slow session
//! never holds anyone else up. Under solo mining each address's miners get the job
//! with a coinbase of their own (a [`Face`]), serialized once per address, the first
//! time one of its sessions needs it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use bitcoin::{ScriptBuf, Target};
use dashmap::{DashMap, DashSet};
use quarry_protocol::fields::{HexBytes, HexU32Be, PrevHash, RawHash};
use quarry_protocol::jsonrpc::Id;
use quarry_protocol::messages::{Notify, ServerMessage};
use quarry_protocol::share::coinbase;
use quarry_protocol::sv2::SharedFrame;
use quarry_protocol::target::{network_difficulty, target_from_nbits};
use quarry_protocol::{Extranonce, WireLine};
use tokio::sync::watch;

use crate::chain::Template;
use crate::coinbase::{set_variant, CoinbaseParts};
use crate::reward::{JobPayouts, Payee, Scheme};

/// How long a job from an older block is still recognised (and answered
/// "stale" rather than "job not found").
const RETAIN: Duration = Duration::from_secs(600);
/// The most jobs kept at once (at one refresh per 30 s: over an hour of one block).
const MAX_JOBS: usize = 128;
/// A wire job id's bits from here up name a variant of the job handed to one
/// extranonce1 (the job re-announced at a new difficulty, or to a resumed
/// session), whose coinbase differs in its variant bytes; the bits below are
/// the job's id. Ids count up from the clock in seconds shifted by 8 bits, far
/// below this.
const VARIANT_SHIFT: u32 = 48;

/// Remembered solo faces of one job beyond which those nobody holds are dropped.
const FACES_PRUNED_AT: usize = 65_536;

/// One job: a template as miners see it.
pub struct Job {
    pub id: u64,
    /// The notify as first sent (`clean_jobs` as announced), with the template's coinbase.
    pub notify: Notify,
    pub template: Arc<Template>,
    pub block_target: Target,
    pub network_difficulty: f64,
    pub created: Instant,
    /// The job with the template's own coinbase, which every session gets unless it
    /// mines solo.
    pub base: Arc<Face>,
    /// Solo miners' faces by payout script, while some session holds them.
    faces: DashMap<ScriptBuf, Weak<Face>>,
    /// Whether faces are still worth remembering: only while the job is the latest.
    current: AtomicBool,
    /// Header hashes of the shares accepted on this job (first 16 bytes), for duplicates.
    seen: DashSet<u128>,
}

impl Job {
    /// The block height this job builds.
    pub fn height(&self) -> u64 {
        self.template.height
    }

    /// The job as `payee`'s miners get it: under solo, with a coinbase paying `payee`,
    /// made once and shared by its sessions while any holds it; otherwise the base.
    pub fn face(&self, payee: Option<&Payee>) -> Arc<Face> {
        let Some(payee) = payee.filter(|_| self.template.payouts.scheme == Scheme::Solo) else {
            return self.base.clone();
        };
        if let Some(face) = self.faces.get(&payee.script).and_then(|f| f.upgrade()) {
            return face;
        }
        let template = &self.template;
        let payouts = template.payouts.for_finder(template.coinbase_value, payee);
        let coinbase = match template.recipe.build(&payouts.split.outputs) {
            Ok(coinbase) => coinbase,
            Err(err) => {
                // The recipe built the template's own coinbase, so this cannot happen.
                tracing::error!(%err, account = %payee.account, "cannot build a solo coinbase; the job's own is sent");
                return self.base.clone();
            }
        };
        let face = Arc::new(Face::new(
            self.id,
            &self.notify,
            Arc::new(payouts),
            coinbase,
        ));
        if self.current.load(Ordering::Acquire) {
            // Entries of faces nobody holds any more (their sessions closed) go once
            // there are many.
            if self.faces.len() >= FACES_PRUNED_AT {
                self.faces.retain(|_, face| face.strong_count() > 0);
            }
            self.faces
                .insert(payee.script.clone(), Arc::downgrade(&face));
        }
        face
    }

    /// Records a share's header hash; `false` if it was seen before.
    pub fn first_sighting(&self, hash: &[u8; 32]) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash[..16]);
        self.seen.insert(u128::from_le_bytes(key))
    }

    /// Stops remembering faces: a newer job is out, and sessions that still need this
    /// one's (late shares, a difficulty change) make their own.
    fn superseded(&self) {
        self.current.store(false, Ordering::Release);
        self.faces.clear();
    }
}

/// A job as one payee's miners see it: what its coinbase pays, the coinbase, and the
/// notify lines, serialized once.
pub struct Face {
    /// The job's id.
    pub job_id: u64,
    pub payouts: Arc<JobPayouts>,
    pub coinbase: CoinbaseParts,
    pub notify: Notify,
    /// `mining.notify` with `clean_jobs = false`, for a session whose last job has
    /// the same tip.
    pub line: Arc<WireLine>,
    /// The same notify with `clean_jobs = true`, for a session on another tip (or
    /// none yet).
    pub clean_line: Arc<WireLine>,
    /// The job as Stratum V2 frames, made when a V2 channel first needs them.
    pub v2: OnceLock<V2Frames>,
}

/// A face as Stratum V2 sends it to every extended channel (each frame
/// serialized once; a channel's encryption puts its id in).
pub struct V2Frames {
    /// `NewExtendedMiningJob` on the channel's tip (with `min_ntime`).
    pub job: SharedFrame,
    /// The same as a future job, for a channel on another tip...
    pub future_job: SharedFrame,
    /// ...and the `SetNewPrevHash` that activates it (for standard channels too).
    pub prev_hash: SharedFrame,
}

impl Face {
    fn new(
        job_id: u64,
        notify: &Notify,
        payouts: Arc<JobPayouts>,
        coinbase: CoinbaseParts,
    ) -> Face {
        let notify = Notify {
            coinb1: HexBytes(coinbase.coinb1.clone()),
            coinb2: HexBytes(coinbase.coinb2.clone()),
            ..notify.clone()
        };
        let line = |clean_jobs: bool| -> Arc<WireLine> {
            Arc::new(notify_line(Notify {
                clean_jobs,
                ..notify.clone()
            }))
        };
        Face {
            job_id,
            payouts,
            line: line(false),
            clean_line: line(true),
            coinbase,
            notify,
            v2: OnceLock::new(),
        }
    }

    /// The coinbase of the job's `variant` with these extranonces.
    pub fn coinbase(&self, variant: u16, en1: &Extranonce, en2: &Extranonce) -> Vec<u8> {
        let parts = &self.coinbase;
        let mut tx = coinbase(&parts.coinb1, en1, en2, &parts.coinb2);
        set_variant(
            &mut tx[parts.coinb1.len() + en1.len() + en2.len()..],
            variant,
        );
        tx
    }

    /// The job handed to one extranonce1 as its `variant` (non-zero, never
    /// handed to it before): a notify under a wire id of its own, with
    /// `clean_jobs` as given, whose coinbase differs in the variant bytes, so
    /// it is new work even to a miner that starts its search over, and shares
    /// on it are judged at the difficulty sent just before it. Returns the
    /// wire id and the line.
    pub fn variant(&self, variant: u16, clean_jobs: bool) -> (u64, WireLine) {
        let wire = u64::from(variant) << VARIANT_SHIFT | self.job_id;
        let job_id = format!("{wire:x}")
            .parse()
            .expect("hex of a u64 is a valid job id");
        let notify = Notify {
            job_id,
            coinb2: HexBytes(self.coinbase.coinb2_variant(variant)),
            clean_jobs,
            ..self.notify.clone()
        };
        (wire, notify_line(notify))
    }
}

/// A job as a miner names it: the job, its variant and the wire id.
pub struct JobRef {
    pub job: Arc<Job>,
    pub variant: u16,
    pub wire: u64,
}

/// A job as fanned out: the job, whose faces hold its notify lines.
pub struct Announcement {
    pub job: Arc<Job>,
    /// When it was published, for fan-out latency.
    pub published: Instant,
}

/// All live jobs and the channel that announces new ones.
pub struct JobBook {
    jobs: RwLock<HashMap<u64, Arc<Job>>>,
    height: AtomicU64,
    next_id: AtomicU64,
    announce: watch::Sender<Arc<Announcement>>,
}

impl JobBook {
    /// A book whose first job is built from `template`.
    pub fn new(template: Template) -> JobBook {
        // Ids start from the clock so a restarted pool never reuses a recent id.
        let first_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() << 8);
        let height = template.height;
        let job = Arc::new(make_job(first_id, Arc::new(template), true));
        let (announce, _) = watch::channel(announcement(job.clone()));
        JobBook {
            jobs: RwLock::new(HashMap::from([(first_id, job)])),
            height: AtomicU64::new(height),
            next_id: AtomicU64::new(first_id + 1),
            announce,
        }
    }

    /// Publishes a job built from `template` to every session. `clean` makes older
    /// jobs void for miners; it is forced when the template builds on a new tip.
    pub fn publish(&self, template: Template) -> Arc<Job> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let new_height = !template.same_tip(&self.announce.borrow().job.template);
        let job = Arc::new(make_job(id, Arc::new(template), new_height));
        let previous = self.announce.borrow().job.clone();
        {
            let mut jobs = self.jobs.write().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let height = job.height();
            // Jobs of the current height stay valid until the next block (some miners
            // ignore non-clean jobs and keep mining the last clean one); older ones are
            // kept a while only to be answered "stale".
            jobs.retain(|_, j| j.height() == height || now.duration_since(j.created) < RETAIN);
            while jobs.len() >= MAX_JOBS {
                let Some(oldest) = jobs.keys().min().copied() else {
                    break;
                };
                jobs.remove(&oldest);
            }
            jobs.insert(id, job.clone());
            self.height.store(job.height(), Ordering::Release);
        }
        self.announce.send_replace(announcement(job.clone()));
        previous.superseded();
        job
    }

    /// Forgets every job, so shares on them are answered as stale, until the next
    /// [`JobBook::publish`]: for a job source that lost its node and cannot vouch for
    /// the tip any more.
    pub fn retire(&self) {
        self.jobs.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The job a miner names by `wire` (its own id or a variant's), if still
    /// known.
    pub fn get(&self, wire: u64) -> Option<JobRef> {
        let variant = u16::try_from(wire >> VARIANT_SHIFT).ok()?;
        let job = self
            .jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(wire & ((1 << VARIANT_SHIFT) - 1)))
            .cloned()?;
        Some(JobRef { job, variant, wire })
    }

    /// Whether shares on `job` can still be accepted: it is known and of the
    /// current height (not retired, not stale).
    pub fn is_live(&self, job: &Job) -> bool {
        job.height() == self.height()
            && self
                .jobs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&job.id)
    }

    /// The height current jobs build; jobs below it are stale.
    pub fn height(&self) -> u64 {
        self.height.load(Ordering::Acquire)
    }

    /// The latest announcement.
    pub fn current(&self) -> Arc<Announcement> {
        self.announce.borrow().clone()
    }

    /// A receiver that wakes on every new job.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Announcement>> {
        self.announce.subscribe()
    }
}

fn make_job(id: u64, template: Arc<Template>, clean: bool) -> Job {
    let notify = Notify {
        job_id: format!("{id:x}")
            .parse()
            .expect("hex of a u64 is a valid job id"),
        prevhash: PrevHash::from_block_hash(template.prev_hash),
        coinb1: HexBytes(template.coinbase.coinb1.clone()),
        coinb2: HexBytes(template.coinbase.coinb2.clone()),
        merkle_branch: template
            .merkle_branch
            .iter()
            .copied()
            .map(RawHash)
            .collect(),
        version: HexU32Be(template.version as u32),
        nbits: HexU32Be(template.bits.to_consensus()),
        ntime: HexU32Be(template.time),
        clean_jobs: clean,
    };
    let nbits = template.bits.to_consensus();
    let base = Arc::new(Face::new(
        id,
        &notify,
        template.payouts.clone(),
        template.coinbase.clone(),
    ));
    Job {
        id,
        notify,
        block_target: target_from_nbits(nbits),
        network_difficulty: network_difficulty(nbits),
        template,
        created: Instant::now(),
        base,
        faces: DashMap::new(),
        current: AtomicBool::new(true),
        seen: DashSet::new(),
    }
}

fn notify_line(notify: Notify) -> WireLine {
    ServerMessage::Notify(notify).to_line(&Id::Null)
}

fn announcement(job: Arc<Job>) -> Arc<Announcement> {
    Arc::new(Announcement {
        job,
        published: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{BlockHash, ScriptBuf};

    use super::*;
    use crate::chain::{ChainParams, EmbeddedChain};
    use crate::reward::JobPayouts;

    fn template_paying(pay: impl FnOnce(bitcoin::Amount, &ScriptBuf) -> JobPayouts) -> Template {
        let payout = ScriptBuf::from_bytes(vec![0x51]);
        let chain = EmbeddedChain::open(ChainParams::new(payout.clone()), Vec::new())
            .expect("a fresh chain");
        chain.template(1_700_000_000, |value| pay(value, &payout))
    }

    fn template() -> Template {
        template_paying(JobPayouts::operator)
    }

    /// Under solo with a 1 % fee.
    fn solo_template() -> Template {
        template_paying(|value, operator| JobPayouts {
            scheme: Scheme::Solo,
            fee_bps: 100,
            ..JobPayouts::operator(value, operator)
        })
    }

    fn payee(seed: u8) -> Payee {
        Payee {
            account: Arc::from(format!("miner{seed}")),
            script: ScriptBuf::from_bytes(vec![0x00, 0x14, seed, seed, seed]),
        }
    }

    fn outputs(face: &Face) -> Vec<(ScriptBuf, u64)> {
        let en = Extranonce::from_counter(0, 4);
        let tx: bitcoin::Transaction =
            bitcoin::consensus::deserialize(&face.coinbase(0, &en, &en)).unwrap();
        tx.output
            .into_iter()
            .map(|o| (o.script_pubkey, o.value.to_sat()))
            .collect()
    }

    #[test]
    fn solo_miners_of_one_address_share_a_face_that_pays_it() {
        let book = JobBook::new(solo_template());
        let job = book.current().job.clone();
        let (alice, bob) = (payee(1), payee(2));
        let first = job.face(Some(&alice));
        // One serialization per address while a session holds it.
        assert!(Arc::ptr_eq(&first, &job.face(Some(&alice))));
        let to_bob = job.face(Some(&bob));
        assert!(!Arc::ptr_eq(&first, &to_bob));
        assert!(Arc::ptr_eq(&job.base, &job.face(None)));

        let value = job.template.coinbase_value.to_sat();
        let fee = value / 100;
        let operator = ScriptBuf::from_bytes(vec![0x51]);
        assert_eq!(
            outputs(&first),
            [(operator.clone(), fee), (alice.script.clone(), value - fee)]
        );
        assert_eq!(outputs(&to_bob)[1], (bob.script.clone(), value - fee));
        assert_eq!(outputs(&job.base), [(operator, value)]);
        // The notify lines carry the face's coinbase; only the outputs differ.
        assert!(first.line.contains(&hex::encode(&first.coinbase.coinb2)));
        assert_eq!(first.coinbase.coinb1, to_bob.coinbase.coinb1);
        assert_eq!(first.payouts.split.lines[0].payee, "miner1");

        // Once a newer job is out, an older job's faces are made afresh, not kept.
        drop((first, to_bob));
        book.publish(solo_template());
        let again = job.face(Some(&alice));
        assert!(!Arc::ptr_eq(&again, &job.face(Some(&alice))));
        assert_eq!(outputs(&again)[1], (alice.script, value - fee));
    }

    #[test]
    fn the_job_paying_everyone_alike_has_one_face() {
        let book = JobBook::new(template());
        let job = book.current().job.clone();
        assert!(Arc::ptr_eq(&job.base, &job.face(Some(&payee(1)))));
    }

    #[test]
    fn a_job_is_live_until_retired_or_a_new_block() {
        let first = template();
        let book = JobBook::new(first.clone());
        let job = book.current().job.clone();
        assert!(book.is_live(&job));

        // A refresh of the same height keeps the older job live.
        let refresh = book.publish(first.clone());
        assert!(book.is_live(&job) && book.is_live(&refresh));

        // A new block makes it stale.
        let next = book.publish(Template {
            height: first.height + 1,
            prev_hash: BlockHash::from_byte_array([7; 32]),
            ..first
        });
        assert!(!book.is_live(&job));
        assert!(book.is_live(&next));

        // A retired book vouches for nothing.
        book.retire();
        assert!(!book.is_live(&next));
    }

    #[test]
    fn a_variant_is_the_same_job_with_other_work() {
        let book = JobBook::new(template());
        let current = book.current();
        let (wire, line) = current.job.base.variant(3, true);
        let call = match quarry_protocol::jsonrpc::parse(&line).unwrap() {
            quarry_protocol::Message::Notification(call) => call,
            other => panic!("not a notification: {other:?}"),
        };
        let Ok(ServerMessage::Notify(notify)) = call.server_message() else {
            panic!("not a notify: {line}");
        };
        assert!(notify.clean_jobs);
        let named = u64::from_str_radix(notify.job_id.as_str(), 16).unwrap();
        let named = book.get(named).expect("the variant names the job");
        assert_eq!(
            (named.wire, named.variant, named.job.id),
            (wire, 3, current.job.id)
        );

        let en1: Extranonce = "01020304".parse().unwrap();
        let en2: Extranonce = "00000000".parse().unwrap();
        // What the miner hashes is what the pool judges, and differs from the base job's.
        assert_eq!(
            notify.coinbase(&en1, &en2),
            named.job.base.coinbase(3, &en1, &en2)
        );
        assert_eq!(
            current.job.notify.coinbase(&en1, &en2),
            named.job.base.coinbase(0, &en1, &en2)
        );
        assert_ne!(
            named.job.base.coinbase(3, &en1, &en2),
            named.job.base.coinbase(0, &en1, &en2)
        );
    }
}
