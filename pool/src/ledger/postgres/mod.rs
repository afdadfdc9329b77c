//! The PostgreSQL ledger: one database that every node of a cluster shares.
//!
//! Client: `tokio-postgres`, the mature native async driver (binary protocol, pipelining,
//! no C library), with `deadpool-postgres` pooling the read connections; the writer keeps a
//! connection of its own (`writer.rs`). sqlx was passed over: its checked queries want a
//! database (or a prepared offline cache) at build time, and its pool adds nothing here.
//!
//! Every write connection runs with `synchronous_commit = on`, whatever the server's
//! default, so a commit has reached the server's WAL on disk (and its synchronous standbys)
//! before a share is acknowledged. TLS is used when the URL says `sslmode=require`; the
//! server's certificate is verified (name and chain) against the PEM file named by the
//! URL's `sslrootcert` or else by `PGSSLROOTCERT` (libpq's names), or the platform's roots
//! when neither is given. Without `sslmode=require` the connection is plain, as for a database on the same
//! host or a private network.

mod history;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

use super::batch::Queue;
use super::history::{Bucket, RecentWork, Scope};
use super::window::WindowFill;
use super::{
    Earning, FoundBlock, Ledger, LedgerError, LedgerOptions, PayoutLine, WindowCredits,
    WorkerTotals,
};

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections pooled at most.
const READ_CONNECTIONS: usize = 4;
/// Shares read per query while filling a PPLNS window.
const WINDOW_CHUNK: i64 = 10_000;

/// The PostgreSQL ledger.
pub struct PostgresLedger {
    queue: Queue,
    /// The cluster node writing (0 until [`Ledger::set_node`]), for its history rows.
    node: Arc<AtomicI32>,
    reads: deadpool_postgres::Pool,
    /// Taken (and awaited) by the first [`Ledger::close`].
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How to reach the server: the parsed URL and its TLS set-up. The cluster's lease,
/// heartbeat and notification connections use it too.
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    pub(crate) location: String,
}

/// Notifications (`LISTEN`) a connection received: channel and payload.
pub(crate) type Notifications = tokio::sync::mpsc::Receiver<(String, String)>;

impl Target {
    /// Parses a `postgres://` URL.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Open`] for an unparsable URL or unusable TLS roots.
    pub(crate) fn parse(url: &str) -> Result<Target, LedgerError> {
        let location = redact(url);
        let open_error = |source: BoxError| LedgerError::Open {
            location: location.clone(),
            operation: "parse the URL",
            source,
        };
        let (url, root_file) = take_param(url, "sslrootcert");
        let mut config: Config = url
            .parse()
            .map_err(|error: tokio_postgres::Error| open_error(error.into()))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("quarry-pool");
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(tls_connector(root_file).map_err(open_error)?),
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Target {
            config,
            tls,
            location,
        })
    }

    /// A new connection, its driver task spawned, with `synchronous_commit` on.
    pub(crate) async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        self.connect_with(None).await
    }

    /// A new connection whose notifications arrive on the returned receiver (the newest
    /// `capacity`; a full receiver drops later ones, so the reader rereads its state).
    pub(crate) async fn connect_listening(
        &self,
        capacity: usize,
    ) -> Result<(Client, Notifications), tokio_postgres::Error> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        let client = self.connect_with(Some(sender)).await?;
        Ok((client, receiver))
    }

    async fn connect_with(
        &self,
        notifications: Option<tokio::sync::mpsc::Sender<(String, String)>>,
    ) -> Result<Client, tokio_postgres::Error> {
        let location = self.location.clone();
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection, location, notifications));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection, location, notifications));
                client
            }
        };
        client.batch_execute("SET synchronous_commit = on").await?;
        Ok(client)
    }
}

type BoxError = super::BoxError;

/// Runs a connection until it closes, logging why it did, and hands its notifications to
/// `notifications`.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    location: String,
    notifications: Option<tokio::sync::mpsc::Sender<(String, String)>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = std::pin::pin!(futures_util::stream::poll_fn(move |cx| {
        connection.poll_message(cx)
    }));
    while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                if let Some(sender) = &notifications {
                    let _ = sender.try_send((note.channel().to_owned(), note.payload().to_owned()));
                }
            }
            Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                tracing::debug!(ledger = %location, notice = %notice.message(), "server notice");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(ledger = %location, error = %super::error_chain(&error), "ledger connection lost");
                return;
            }
        }
    }
}

/// `url` without its query parameter `key` (which tokio-postgres would refuse), and the
/// parameter's value.
fn take_param(url: &str, key: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((name, found)) if name == key => {
                value = Some(std::path::PathBuf::from(found));
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

/// Rustls trusting the certificates of `root_file` (or else of the file `PGSSLROOTCERT`
/// names) and nothing else, as libpq does; without either, the platform's roots.
fn tls_connector(
    root_file: Option<std::path::PathBuf>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    let root_file = root_file.or_else(|| std::env::var_os("PGSSLROOTCERT").map(Into::into));
    if let Some(path) = root_file {
        let pem = std::fs::read(&path)
            .map_err(|error| format!("reading root certificates {}: {error}", path.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert?)?;
        }
    } else {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err("sslmode=require but no trusted root certificates (set sslrootcert)".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A stored node id (an `INTEGER` column).
fn node_id(stored: Option<i32>) -> Option<u8> {
    stored.and_then(|id| u8::try_from(id).ok())
}

/// The URL with its password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PostgresLedger {
    /// Connects, migrates the schema and starts the writer task.
    ///
    /// # Errors
    ///
    /// An unparsable URL, an unreachable server or a refused login, a schema newer than this
    /// build, or a failed migration.
    pub async fn open(url: &str, options: LedgerOptions) -> Result<PostgresLedger, LedgerError> {
        let target = Target::parse(url)?;
        let open_error = |operation| {
            let location = target.location.clone();
            move |source: tokio_postgres::Error| LedgerError::Open {
                location,
                operation,
                source: source.into(),
            }
        };
        let mut client = target.connect().await.map_err(open_error("connect"))?;
        schema::migrate(&mut client, &target.location).await?;

        let manager = match &target.tls {
            Some(tls) => deadpool_postgres::Manager::new(target.config.clone(), tls.clone()),
            None => deadpool_postgres::Manager::new(target.config.clone(), NoTls),
        };
        let reads = deadpool_postgres::Pool::builder(manager)
            .max_size(READ_CONNECTIONS)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| LedgerError::Open {
                location: target.location.clone(),
                operation: "build the read pool",
                source: error.into(),
            })?;

        let (queue, rx) = Queue::new(target.location.clone(), options.queue_capacity);
        let node = Arc::new(AtomicI32::new(0));
        let writer = writer::Writer::new(
            client,
            target.clone(),
            rx,
            queue.shared.clone(),
            node.clone(),
            &options,
        );
        let handle = tokio::spawn(writer.run());
        tracing::info!(ledger = %target.location, "opened ledger");
        Ok(PostgresLedger {
            queue,
            node,
            reads,
            writer: tokio::sync::Mutex::new(Some(handle)),
        })
    }

    /// Runs `query` on a pooled read connection.
    async fn read<T>(
        &self,
        what: &'static str,
        query: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, LedgerError> {
        let read_error = |source: BoxError| LedgerError::Read {
            location: self.queue.location().into(),
            what,
            source,
        };
        let client = self
            .reads
            .get()
            .await
            .map_err(|error| read_error(error.into()))?;
        query(&client)
            .await
            .map_err(|error| read_error(error.into()))
    }
}

impl PostgresLedger {
    /// A block hash as stored, which must be 32 bytes.
    fn stored_hash(&self, bytes: Vec<u8>, what: &'static str) -> Result<BlockHash, LedgerError> {
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(BlockHash::from_byte_array)
            .map_err(|_| LedgerError::Read {
                location: self.queue.location().into(),
                what,
                source: format!("a stored block hash has {} bytes, not 32", bytes.len()).into(),
            })
    }

    /// The payout tables of the blocks with these hashes (those that have one).
    async fn payouts_of(
        &self,
        hashes: Vec<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<PayoutLine>)>, LedgerError> {
        let rows = self
            .read("payout tables", async |client| {
                client
                    .query(
                        "SELECT block_hash, payee, credit, earned, owed_before, paid, owed_after \
                         FROM block_payouts WHERE block_hash = ANY($1) \
                         ORDER BY block_hash, payee",
                        &[&hashes],
                    )
                    .await
            })
            .await?;
        let mut tables: Vec<(Vec<u8>, Vec<PayoutLine>)> = Vec::new();
        for row in &rows {
            let hash: Vec<u8> = row.get(0);
            let line = payout_line(row, 1);
            match tables.last_mut() {
                Some((last, lines)) if *last == hash => lines.push(line),
                _ => tables.push((hash, vec![line])),
            }
        }
        Ok(tables)
    }
}

#[async_trait::async_trait]
impl Ledger for PostgresLedger {
    fn queue(&self) -> &Queue {
        &self.queue
    }

    fn set_node(&self, node: u8) {
        self.node.store(i32::from(node), Ordering::Relaxed);
    }

    async fn chain_blocks(&self, from_height: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        let from = i64::try_from(from_height).unwrap_or(i64::MAX);
        self.read("chain blocks", async |client| {
            let rows = client
                .query(
                    "SELECT raw FROM chain WHERE height >= $1 ORDER BY height",
                    &[&from],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    async fn worker_totals(&self) -> Result<Vec<WorkerTotals>, LedgerError> {
        let rows = self
            .read("worker totals", async |client| {
                client
                    .query(
                        "SELECT name, accepted, accepted_difficulty, rejected_stale, \
                         rejected_duplicate, rejected_low_difficulty, rejected_malformed, \
                         rejected_unauthorized, best_share_difficulty, last_share_ms, \
                         CASE WHEN best_share_epoch = (SELECT block_epoch FROM pool_state) \
                         THEN best_share_since_block ELSE 0 END \
                         FROM workers ORDER BY name",
                        &[],
                    )
                    .await
            })
            .await?;
        let count = |value: i64| u64::try_from(value).unwrap_or(0);
        Ok(rows
            .iter()
            .map(|row| WorkerTotals {
                worker: row.get(0),
                accepted: count(row.get(1)),
                accepted_difficulty: row.get(2),
                rejected: [3, 4, 5, 6, 7].map(|column| count(row.get(column))),
                best_share_difficulty: row.get(8),
                last_share_ms: row.get(9),
                best_share_since_block: row.get(10),
            })
            .collect())
    }

    async fn shares_since(&self, since_ms: i64) -> Result<Vec<(String, i64, f64)>, LedgerError> {
        self.read("shares", async |client| {
            let rows = client
                .query(
                    "SELECT workers.name, shares.time_ms, shares.difficulty \
                     FROM shares JOIN workers ON workers.id = shares.worker_id \
                     WHERE shares.time_ms >= $1 ORDER BY shares.time_ms, shares.id",
                    &[&since_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect())
        })
        .await
    }

    async fn history(
        &self,
        scope: Scope,
        name: &str,
        since_ms: i64,
        until_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Bucket>, LedgerError> {
        self.read("hashrate history", async |client| {
            history::query(client, scope, name, since_ms, until_ms, step_ms).await
        })
        .await
    }

    async fn others_recent_work(&self, until_ms: i64) -> Result<RecentWork, LedgerError> {
        let node = self.node.load(Ordering::Relaxed);
        self.read("other nodes' work", async |client| {
            history::others(client, node, until_ms).await
        })
        .await
    }

    async fn block(&self, hash: BlockHash) -> Result<Option<FoundBlock>, LedgerError> {
        let bytes = hash.to_byte_array().to_vec();
        let row = self
            .read("a found block", async |client| {
                client
                    .query_opt(
                        "SELECT height, worker, time_ms, raw, status, node FROM blocks WHERE hash = $1",
                        &[&bytes],
                    )
                    .await
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut payouts = self.payouts_of(vec![bytes]).await?;
        Ok(Some(FoundBlock {
            height: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            hash,
            worker: row.get(1),
            time_ms: row.get(2),
            raw: row.get(3),
            status: row.get(4),
            node: node_id(row.get(5)),
            payouts: payouts.pop().map(|(_, lines)| lines).unwrap_or_default(),
        }))
    }

    async fn window_credits(&self, window: f64) -> Result<WindowCredits, LedgerError> {
        let credits = self
            .read("the PPLNS window", async |client| {
                let mut fill = WindowFill::new(window);
                let mut below = i64::MAX;
                while !fill.is_full() {
                    let rows = client
                        .query(
                            "SELECT shares.id, workers.name, shares.difficulty FROM shares \
                             JOIN workers ON workers.id = shares.worker_id \
                             WHERE shares.id < $1 ORDER BY shares.id DESC LIMIT $2",
                            &[&below, &WINDOW_CHUNK],
                        )
                        .await?;
                    let Some(last) = rows.last() else {
                        break;
                    };
                    below = last.get(0);
                    for row in &rows {
                        if fill.add(row.get(0), row.get(1), row.get(2)) {
                            break;
                        }
                    }
                }
                Ok(fill.finish())
            })
            .await?;
        if let Some(id) = credits.oldest_id {
            self.queue.shared.keep_shares_from(id);
        }
        Ok(credits)
    }

    async fn earnings(&self, payee: &str, limit: usize) -> Result<Vec<Earning>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read("earnings", async |client| {
                client
                    .query(
                        "SELECT blocks.height, blocks.hash, blocks.time_ms, blocks.status, \
                         p.payee, p.credit, p.earned, p.owed_before, p.paid, p.owed_after \
                         FROM block_payouts AS p JOIN blocks ON blocks.hash = p.block_hash \
                         WHERE p.payee = $1 ORDER BY blocks.time_ms DESC, blocks.id DESC \
                         LIMIT $2",
                        &[&payee, &limit],
                    )
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| {
                let hash = self.stored_hash(row.get(1), "earnings")?;
                Ok(Earning {
                    height: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                    hash,
                    time_ms: row.get(2),
                    status: row.get(3),
                    line: payout_line(row, 4),
                })
            })
            .collect()
    }

    async fn owed(&self, payee: Option<&str>) -> Result<Vec<(String, i64)>, LedgerError> {
        let rows = self
            .read("owed balances", async |client| {
                client
                    .query(
                        "SELECT payee, sats FROM owed WHERE $1::text IS NULL OR payee = $1 \
                         ORDER BY payee",
                        &[&payee],
                    )
                    .await
            })
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn bindings(&self) -> Result<Vec<(String, String)>, LedgerError> {
        let rows = self
            .read("account addresses", async |client| {
                client
                    .query(
                        "SELECT account, address FROM account_addresses ORDER BY account",
                        &[],
                    )
                    .await
            })
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn blocks(&self, limit: usize) -> Result<Vec<FoundBlock>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read("found blocks", async |client| {
                client
                    .query(
                        "SELECT height, hash, worker, time_ms, raw, status, node FROM blocks \
                         ORDER BY time_ms DESC, id DESC LIMIT $1",
                        &[&limit],
                    )
                    .await
            })
            .await?;
        let hashes: Vec<Vec<u8>> = rows.iter().map(|row| row.get(1)).collect();
        let mut payouts: HashMap<Vec<u8>, Vec<PayoutLine>> =
            self.payouts_of(hashes).await?.into_iter().collect();
        rows.iter()
            .map(|row| {
                let hash: Vec<u8> = row.get(1);
                let lines = payouts.remove(&hash).unwrap_or_default();
                let hash = self.stored_hash(hash, "found blocks")?;
                Ok(FoundBlock {
                    height: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                    hash,
                    worker: row.get(2),
                    time_ms: row.get(3),
                    raw: row.get(4),
                    status: row.get(5),
                    node: node_id(row.get(6)),
                    payouts: lines,
                })
            })
            .collect()
    }

    async fn close(&self) -> Result<(), LedgerError> {
        let mut writer = self.writer.lock().await;
        let Some(handle) = writer.take() else {
            return Ok(());
        };
        let result = self.queue.close().await;
        if handle.await.is_err() {
            return Err(self.queue.writer_gone());
        }
        tracing::info!(ledger = %self.queue.location(), "closed ledger");
        result
    }
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("location", &self.queue.location())
            .finish_non_exhaustive()
    }
}

/// A payout line from `row`'s columns `payee, credit, earned, owed_before, paid,
/// owed_after`, from column `first` on.
fn payout_line(row: &tokio_postgres::Row, first: usize) -> PayoutLine {
    PayoutLine {
        payee: row.get(first),
        credit: row.get(first + 1),
        earned: row.get(first + 2),
        owed_before: row.get(first + 3),
        paid: row.get(first + 4),
        owed_after: row.get(first + 5),
    }
}
