//! Extensions (SV2 extension 0x0001 negotiates them after `SetupConnection`). The
//! pool speaks worker-specific hashrate tracking (0x0002): a proxy that mines for
//! many workers on one channel (SRI's translator, aggregating its V1 miners) names
//! each share's worker in a TLV field after `SubmitSharesExtended` (SRI's
//! translator sends the part of its V1 miner's name after the account), and the
//! pool credits that worker of the channel's account, authorized as a V1 worker
//! would be (a valid name), up to [`MAX_TRACKED_WORKERS`] per channel; other
//! shares are the channel's. As SRI's pool answers: `RequestExtensions.Success`
//! with the ones supported when there are any, else `RequestExtensions.Error`
//! naming them, so a client learns by a message, not a closed connection, to go on
//! without them or to fail over.

use binary_sv2::Seq064K;
use extensions_sv2::{
    RequestExtensions, RequestExtensionsError, RequestExtensionsSuccess, UserIdentity,
    EXTENSION_TYPE_EXTENSIONS_NEGOTIATION, EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,
    TLV_FIELD_TYPE_USER_IDENTITY,
};
use quarry_protocol::sv2::{
    binary_sv2, extensions_sv2, AnyMessage, Extensions, ExtensionsNegotiation, NoiseCodec, Tlv,
};

use super::Connection;
use crate::accounting::account_of;

/// The extensions the pool supports.
const SUPPORTED: [u16; 2] = [
    EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
    EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,
];
/// The most workers one channel's shares may name (beyond them, the channel's).
pub(super) const MAX_TRACKED_WORKERS: usize = 1024;

/// The reply to a request for `requested`: `Ok(supported)` when the pool
/// supports any, else `Err(unsupported)`.
fn answer(requested: &[u16]) -> Result<Vec<u16>, Vec<u16>> {
    let (supported, unsupported): (Vec<u16>, Vec<u16>) =
        requested.iter().partition(|e| SUPPORTED.contains(e));
    if supported.is_empty() {
        Err(unsupported)
    } else {
        Ok(supported)
    }
}

/// The worker a share's TLV fields name (worker-specific hashrate tracking).
pub(super) fn worker_identity(tlvs: &[Tlv]) -> Option<String> {
    let tlv = tlvs.iter().find(|tlv| {
        tlv.r#type.extension_type == EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
            && tlv.r#type.field_type == TLV_FIELD_TYPE_USER_IDENTITY
    })?;
    UserIdentity::from_bytes(&tlv.value)
        .ok()
        .and_then(|identity| identity.as_str().map(str::to_owned))
}

/// The pool's name for the worker `identity` of a channel of `channel_worker`: a
/// worker of the channel's account (the identity as it is when it already names
/// that account).
pub(super) fn tracked_worker(channel_worker: &str, identity: &str) -> String {
    let account = account_of(channel_worker);
    match identity.strip_prefix(account) {
        Some(rest) if rest.starts_with('.') => identity.to_owned(),
        _ => format!("{account}.{identity}"),
    }
}

impl Connection {
    pub(super) fn request_extensions(
        &mut self,
        request: RequestExtensions<'_>,
        codec: &mut NoiseCodec,
    ) {
        let requested = request.requested_extensions.into_inner();
        let request_id = request.request_id;
        let reply = match answer(&requested) {
            Ok(supported) => {
                tracing::debug!(?requested, ?supported, "extensions negotiated");
                self.extensions.clone_from(&supported);
                ExtensionsNegotiation::RequestExtensionsSuccess(RequestExtensionsSuccess {
                    request_id,
                    supported_extensions: Seq064K::new(supported).expect("a subset fits"),
                })
            }
            Err(unsupported) => {
                tracing::info!(
                    ?requested,
                    ?unsupported,
                    "extensions refused: the pool does not support them"
                );
                ExtensionsNegotiation::RequestExtensionsError(RequestExtensionsError {
                    request_id,
                    unsupported_extensions: Seq064K::new(unsupported).expect("a subset fits"),
                    required_extensions: Seq064K::new(Vec::new()).expect("empty fits"),
                })
            }
        };
        let reply = Extensions::ExtensionsNegotiation(reply);
        self.send(codec, AnyMessage::Extensions(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_extensions_are_granted_and_others_refused() {
        assert_eq!(answer(&[]), Err(vec![]));
        assert_eq!(answer(&[2]), Ok(vec![2]));
        assert_eq!(answer(&[1, 2, 0x4000]), Ok(vec![1, 2]));
        assert_eq!(answer(&[0x4000, 7]), Err(vec![0x4000, 7]));
    }

    #[test]
    fn a_named_worker_is_one_of_the_channels_account() {
        let named = |identity| tracked_worker("alice.translator-proxy", identity);
        assert_eq!(named("rig0"), "alice.rig0");
        assert_eq!(named("alice.rig0"), "alice.rig0");
        assert_eq!(named("bob.rig0"), "alice.bob.rig0");
        assert_eq!(named("alicerig"), "alice.alicerig");
        assert_eq!(tracked_worker("alice", "rig0"), "alice.rig0");
    }

    #[test]
    fn a_share_names_its_worker_in_a_user_identity_field() {
        let named = |tlvs: &[Tlv]| worker_identity(tlvs);
        assert_eq!(named(&[]), None);
        let identity = Tlv::new(2, 1, b"alice.rig7".to_vec());
        let other = Tlv::new(2, 9, b"alice.other".to_vec());
        assert_eq!(named(&[other.clone(), identity]), Some("alice.rig7".into()));
        assert_eq!(named(&[other]), None);
        // Over 32 bytes, or not UTF-8: no name.
        assert_eq!(named(&[Tlv::new(2, 1, vec![b'a'; 33])]), None);
        assert_eq!(named(&[Tlv::new(2, 1, vec![0xff, 0xfe])]), None);
    }
}
