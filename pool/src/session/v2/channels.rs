//! Opening and updating a V2 connection's channels: each is a miner to the rest of
//! the pool, with its worker authorized, its own extranonce1 lease, and a start
//! difficulty from its nominal hashrate, no easier than its maximum target.

use binary_sv2::{B032, U256};
use mining_sv2::{
    OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess, OpenMiningChannelError,
    OpenStandardMiningChannel, OpenStandardMiningChannelSuccess, UpdateChannel, UpdateChannelError,
};
use quarry_protocol::sv2::{binary_sv2, mining_sv2, AnyMessage, Mining, NoiseCodec};
use quarry_protocol::target::hash_difficulty;
use quarry_protocol::Difficulty;
use tokio::time::Instant;

use super::acks::Acks;
use super::jobs::target_bytes;
use super::{standard_extranonce2, Channel, Connection, MAX_CHANNELS};
use crate::session::core::{Terms, MAX_WORKERS};

impl Connection {
    /// Opens a channel for `user_identity`: the worker authorized, a lease and a
    /// start difficulty from the miner's nominal hashrate, no easier than its
    /// maximum target allows. Returns the channel id, or the error code to send.
    pub(super) fn open(
        &mut self,
        user_identity: &str,
        hashrate: f32,
        max_target: &[u8; 32],
        extended: bool,
    ) -> Result<u32, String> {
        if self.channels.len() >= MAX_CHANNELS {
            return Err("too-many-channels".to_owned());
        }
        let ctx = self.core.ctx.clone();
        let mut terms = Terms::new(&ctx);
        let now = Instant::now();
        if hashrate.is_finite() && hashrate > 0.0 {
            // The difficulty at which this hashrate finds a share per interval.
            let wanted =
                f64::from(hashrate) * ctx.config.share_interval.as_secs_f64() / 4_294_967_296.0;
            if let Ok(wanted) = Difficulty::new(wanted) {
                terms.difficulty = terms.vardiff.set(wanted, now);
            }
        }
        let floor = hash_difficulty(max_target);
        if terms.difficulty.get() < floor {
            let Ok(floor) = Difficulty::new(floor) else {
                return Err("max-target-out-of-range".to_owned());
            };
            terms.difficulty = terms.vardiff.set(floor, now);
            if terms.difficulty.get() < floor.get() {
                return Err("max-target-out-of-range".to_owned());
            }
        }
        terms.vardiff.announced(now);
        // Last, so that a refused channel leaves no worker behind.
        let worker = self
            .core
            .authorize(&mut terms, user_identity, MAX_WORKERS)
            .map_err(|reason| {
                tracing::info!(%reason, user_identity, "channel refused");
                "unknown-user".to_owned()
            })?;
        terms.version_mask = ctx.config.version_mask;
        terms.lease = Some(ctx.extranonces.lease(None));
        let id = self.next_channel;
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        self.channels.insert(
            id,
            Channel {
                extended,
                worker,
                terms,
                acks: Acks::default(),
            },
        );
        Ok(id)
    }

    pub(super) fn open_standard(
        &mut self,
        open: OpenStandardMiningChannel<'_>,
        codec: &mut NoiseCodec,
    ) {
        let identity = open.user_identity.as_utf8_or_hex();
        let max_target = *open.max_target.as_array();
        match self.open(&identity, open.nominal_hash_rate, &max_target, false) {
            Err(code) => self.open_error(codec, open.request_id, &code),
            Ok(id) => {
                let channel = &self.channels[&id];
                // The whole extranonce is the pool's: extranonce1, then zeros.
                let en2 = standard_extranonce2(self.core.ctx.config.extranonce2_size);
                let prefix = [channel.extranonce1().as_bytes(), en2.as_bytes()].concat();
                let target = target_bytes(channel.terms.difficulty);
                let reply = OpenStandardMiningChannelSuccess {
                    request_id: open.request_id,
                    channel_id: id,
                    target: U256::from(&target),
                    extranonce_prefix: B032::new(&prefix).expect("at most 12 bytes"),
                    group_channel_id: 0,
                };
                self.send(
                    codec,
                    AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(reply)),
                );
                self.first_job(id, codec);
            }
        }
    }

    pub(super) fn open_extended(
        &mut self,
        open: OpenExtendedMiningChannel<'_>,
        codec: &mut NoiseCodec,
    ) {
        let size = self.core.ctx.config.extranonce2_size;
        if usize::from(open.min_extranonce_size) > size {
            tracing::info!(
                wanted = open.min_extranonce_size,
                size,
                "extended channel refused: the miner wants more extranonce than --extranonce2-size gives"
            );
            return self.open_error(codec, open.request_id, "min-extranonce-size-too-large");
        }
        let identity = open.user_identity.as_utf8_or_hex();
        let max_target = *open.max_target.as_array();
        match self.open(&identity, open.nominal_hash_rate, &max_target, true) {
            Err(code) => self.open_error(codec, open.request_id, &code),
            Ok(id) => {
                let channel = &self.channels[&id];
                let prefix = channel.extranonce1();
                let target = target_bytes(channel.terms.difficulty);
                let reply = OpenExtendedMiningChannelSuccess {
                    request_id: open.request_id,
                    channel_id: id,
                    target: U256::from(&target),
                    extranonce_size: u16::try_from(size).expect("at most 8"),
                    extranonce_prefix: B032::new(prefix.as_bytes()).expect("4 bytes"),
                    group_channel_id: 0,
                };
                self.send(
                    codec,
                    AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(reply)),
                );
                self.first_job(id, codec);
            }
        }
    }

    pub(super) fn open_error(&mut self, codec: &mut NoiseCodec, request_id: u32, code: &str) {
        let reply = OpenMiningChannelError {
            request_id,
            error_code: code.try_into().expect("a short code"),
        };
        self.send(
            codec,
            AnyMessage::Mining(Mining::OpenMiningChannelError(reply)),
        );
    }

    pub(super) fn update(&mut self, update: UpdateChannel<'_>, codec: &mut NoiseCodec) {
        let id = update.channel_id;
        let Some(channel) = self.channels.get_mut(&id) else {
            let reply = UpdateChannelError {
                channel_id: id,
                error_code: "invalid-channel-id".try_into().expect("a short code"),
            };
            return self.send(codec, AnyMessage::Mining(Mining::UpdateChannelError(reply)));
        };
        let floor = hash_difficulty(update.maximum_target.as_array());
        let terms = &mut channel.terms;
        if terms.difficulty.get() < floor {
            if let Ok(floor) = Difficulty::new(floor) {
                terms.vardiff.set(floor, Instant::now());
            }
            if terms.vardiff.current().get() < floor {
                let reply = UpdateChannelError {
                    channel_id: id,
                    error_code: "max-target-out-of-range".try_into().expect("a short code"),
                };
                return self.send(codec, AnyMessage::Mining(Mining::UpdateChannelError(reply)));
            }
            self.send_target(id, codec);
        }
    }
}
