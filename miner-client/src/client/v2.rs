//! A Stratum V2 connection: the Noise handshake, which must prove the URL's authority
//! key before anything else is sent or hashed, then a V2 [`Session`] driven over the
//! encrypted frames. It ends the way a V1 connection does, so failover, failback and
//! backoff treat both alike.

use futures_util::StreamExt;
use quarry_protocol::sv2::{AuthorityPublicKey, Incoming, NoiseCodec};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use super::{lost, Client, Ended, Stream, CONNECT_TIMEOUT, MAX_HELD};
use crate::hasher::FoundShare;
use crate::session::Action;
use crate::session_v2::{Request, Session, SessionConfig};
use crate::url::PoolUrl;

/// The most encrypted bytes one frame from the pool may take: a job carries the
/// coinbase prefix and suffix, a few hundred bytes for most pools and tens of KB for
/// a coinbase paying many outputs.
pub const MAX_FRAME: usize = 256 * 1024;

/// The pool's side of the connection: decrypted frames in, encrypted bytes out.
type Wire = FramedRead<Box<dyn Stream>, NoiseCodec>;

/// Runs the Noise handshake as initiator over `stream`, within the connect timeout.
///
/// # Errors
/// The pool did not prove `key` (or closed, or was too slow): the reason.
pub(super) async fn handshake(
    mut stream: Box<dyn Stream>,
    key: AuthorityPublicKey,
) -> Result<Wire, String> {
    let (codec, first) = NoiseCodec::initiator(key, MAX_FRAME).map_err(|e| e.to_string())?;
    let run = async move {
        stream
            .write_all(&first)
            .await
            .map_err(|error| format!("writing the noise handshake: {error}"))?;
        let mut wire = FramedRead::new(stream, codec);
        match wire.next().await {
            Some(Ok(Incoming::Established)) => Ok(wire),
            Some(Ok(other)) => Err(format!("unexpected {other:?} in the noise handshake")),
            Some(Err(error)) => Err(error.to_string()),
            None => Err("closed during the noise handshake".to_owned()),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, run)
        .await
        .map_err(|_| "noise handshake timed out".to_owned())?
}

impl Client {
    /// Mines on a V2 pool over `stream` until the connection ends; `index` is the
    /// pool's place in the list (a backup probes the primary).
    pub(super) async fn mine_v2(
        &mut self,
        stream: Box<dyn Stream>,
        url: &PoolUrl,
        key: AuthorityPublicKey,
        index: usize,
    ) -> Ended {
        let mut wire = match handshake(stream, key).await {
            Ok(wire) => wire,
            Err(reason) => {
                tracing::error!(pool = %url, "refusing the pool: it did not prove the authority key in its URL ({reason})");
                return lost(format!("noise handshake: {reason}"), false);
            }
        };
        self.connection += 1;
        let connection = self.connection;
        // A channel lives as long as its connection: shares of earlier ones are void.
        self.previous = Some((connection, url.clone()));
        let mut session = Session::new(
            SessionConfig {
                user: self.config.user.clone(),
                channel: self.config.sv2_channel,
                version_mask: self.config.version_mask,
                nominal_hash_rate: self.hash_rate() as f32,
                endpoint_host: url.host.clone(),
                endpoint_port: url.port,
            },
            connection,
        );
        let mut mined = false;
        let mut held: Vec<FoundShare> = Vec::new();
        let (_probe, mut primary_answers) = self.probe(index);
        let mut probing = index != 0;
        let mut actions = session.start();
        loop {
            for action in actions.drain(..) {
                if let Err(ended) = self.act_v2(action, &mut wire, url, &mut mined).await {
                    return ended;
                }
            }
            if session.last_job().is_some() && !held.is_empty() {
                actions = self.release_held(&mut held, |share| session.submit(share));
                continue;
            }
            tokio::select! {
                frame = tokio::time::timeout(self.config.pool_timeout, wire.next()) => match frame {
                    Ok(Some(Ok(Incoming::Frame(mut frame)))) => {
                        let name = frame.name();
                        actions = match frame.message() {
                            Ok(message) => session.handle(message, name),
                            Err(error) => vec![Action::Ignored(error.to_string())],
                        };
                    }
                    Ok(Some(Ok(other))) => return lost(format!("unexpected {other:?} after the handshake"), mined),
                    Ok(Some(Err(error))) => return lost(format!("reading from the pool: {error}"), mined),
                    Ok(None) => return lost("connection closed by the pool".into(), mined),
                    Err(_) => return lost(format!("pool silent for {} s", self.config.pool_timeout.as_secs()), mined),
                },
                Some(share) = self.shares.recv() => {
                    if held.len() < MAX_HELD {
                        held.push(share);
                    } else {
                        self.stats.stale();
                    }
                },
                answered = &mut primary_answers, if probing => {
                    probing = false;
                    if answered.is_ok() {
                        tracing::info!(primary = %self.config.pools[0], "primary pool answers again; switching back to it");
                        return Ended::Failback;
                    }
                }
            }
        }
    }

    /// Carries out `action`; a request is encrypted and written.
    async fn act_v2(
        &mut self,
        action: Action<Request>,
        wire: &mut Wire,
        url: &PoolUrl,
        mined: &mut bool,
    ) -> Result<(), Ended> {
        let Some(request) = self.outcome(action, url, mined)? else {
            return Ok(());
        };
        tracing::trace!(?request, "send");
        let bytes = request
            .message()
            .and_then(|message| wire.decoder_mut().encode(message))
            .map_err(|error| lost(format!("cannot encode {request:?}: {error}"), *mined))?;
        // A pool that stops reading is as dead as one that stops writing.
        match tokio::time::timeout(self.config.pool_timeout, wire.get_mut().write_all(&bytes)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(lost(format!("writing to the pool: {error}"), *mined)),
            Err(_) => Err(lost("the pool stopped reading".into(), *mined)),
        }
    }
}
