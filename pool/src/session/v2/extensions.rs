//! Extension negotiation (extension 0x0001): a client names the extensions it
//! wants after `SetupConnection`. The pool speaks only the negotiation itself, so
//! it answers every other one as unsupported; the client then knows, at once and
//! by a message instead of a closed connection, to go on without them or to fail
//! over (SRI's translator does so for its `required_extensions`).

use binary_sv2::Seq064K;
use extensions_sv2::{
    RequestExtensions, RequestExtensionsError, RequestExtensionsSuccess,
    EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
};
use quarry_protocol::sv2::{
    binary_sv2, extensions_sv2, AnyMessage, Extensions, ExtensionsNegotiation, NoiseCodec,
};

use super::Connection;

/// The extensions the pool supports.
const SUPPORTED: [u16; 1] = [EXTENSION_TYPE_EXTENSIONS_NEGOTIATION];

/// The reply to a request for `requested`: `Ok(supported)` when the pool
/// supports every one, else `Err(unsupported)`.
fn answer(requested: &[u16]) -> Result<Vec<u16>, Vec<u16>> {
    let (supported, unsupported): (Vec<u16>, Vec<u16>) =
        requested.iter().partition(|e| SUPPORTED.contains(e));
    if unsupported.is_empty() {
        Ok(supported)
    } else {
        Err(unsupported)
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
                tracing::debug!(?requested, "extensions negotiated");
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
    fn only_the_negotiation_itself_is_supported() {
        assert_eq!(answer(&[]), Ok(vec![]));
        assert_eq!(answer(&[1]), Ok(vec![1]));
        assert_eq!(answer(&[2]), Err(vec![2]));
        assert_eq!(answer(&[1, 2, 0x4000]), Err(vec![2, 0x4000]));
    }
}
