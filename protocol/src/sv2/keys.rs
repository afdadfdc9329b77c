//! Authority keys in the form SRI's tools read and write: a public key is
//! base58check of `[1, 0, x-only key]` (version 1, little-endian u16), a secret
//! key base58check of its 32 bytes.

use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey};

/// Why a key string was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not base58check: {0}")]
    Base58(String),
    #[error("an authority public key is 34 bytes with version 1; got {0} bytes")]
    PublicShape(usize),
    #[error("a secret key is 32 bytes; got {0}")]
    SecretShape(usize),
    #[error("not a valid secp256k1 key")]
    Curve,
}

/// The x-only public key an initiator pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthorityPublicKey(pub [u8; 32]);

/// An authority keypair: the secret signs each connection's certificate.
#[derive(Clone)]
pub struct AuthorityKeypair {
    pub secret: [u8; 32],
    pub public: AuthorityPublicKey,
}

impl std::fmt::Debug for AuthorityKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for AuthorityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = [0u8; 34];
        bytes[0] = 1;
        bytes[2..].copy_from_slice(&self.0);
        f.write_str(&bs58::encode(bytes).with_check().into_string())
    }
}

impl std::str::FromStr for AuthorityPublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bytes = bs58::decode(text.trim())
            .with_check(None)
            .into_vec()
            .map_err(|err| KeyError::Base58(err.to_string()))?;
        if bytes.len() != 34 || bytes[..2] != [1, 0] {
            return Err(KeyError::PublicShape(bytes.len()));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[2..]);
        bitcoin::secp256k1::XOnlyPublicKey::from_slice(&key).map_err(|_| KeyError::Curve)?;
        Ok(AuthorityPublicKey(key))
    }
}

impl AuthorityKeypair {
    /// A fresh random keypair.
    pub fn generate() -> AuthorityKeypair {
        loop {
            let secret: [u8; 32] = rand::random();
            if let Ok(keypair) = AuthorityKeypair::from_secret(secret) {
                return keypair;
            }
        }
    }

    /// The keypair of a 32-byte secret.
    ///
    /// # Errors
    /// The bytes are zero or not below the curve order.
    pub fn from_secret(secret: [u8; 32]) -> Result<AuthorityKeypair, KeyError> {
        let key = SecretKey::from_slice(&secret).map_err(|_| KeyError::Curve)?;
        let keypair = Keypair::from_secret_key(&Secp256k1::signing_only(), &key);
        let (public, _) = keypair.x_only_public_key();
        Ok(AuthorityKeypair {
            secret,
            public: AuthorityPublicKey(public.serialize()),
        })
    }

    /// The secret key as SRI's configs spell it (base58check).
    pub fn secret_string(&self) -> String {
        bs58::encode(self.secret).with_check().into_string()
    }

    /// Reads a secret key as SRI's configs spell it.
    ///
    /// # Errors
    /// Not base58check, not 32 bytes, or not a valid key.
    pub fn parse_secret(text: &str) -> Result<AuthorityKeypair, KeyError> {
        let bytes = bs58::decode(text.trim())
            .with_check(None)
            .into_vec()
            .map_err(|err| KeyError::Base58(err.to_string()))?;
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::SecretShape(bytes.len()))?;
        AuthorityKeypair::from_secret(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair SRI's examples and tests use.
    const SRI_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
    const SRI_SECRET: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";

    #[test]
    fn reads_and_writes_sri_keys() {
        let keypair = AuthorityKeypair::parse_secret(SRI_SECRET).unwrap();
        assert_eq!(keypair.public.to_string(), SRI_PUBLIC);
        assert_eq!(keypair.secret_string(), SRI_SECRET);
        let public: AuthorityPublicKey = SRI_PUBLIC.parse().unwrap();
        assert_eq!(public, keypair.public);
    }

    #[test]
    fn refuses_bad_keys() {
        assert!(matches!(
            "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH73".parse::<AuthorityPublicKey>(),
            Err(KeyError::Base58(_))
        ));
        assert!(matches!(
            SRI_SECRET.parse::<AuthorityPublicKey>(),
            Err(KeyError::PublicShape(32))
        ));
        assert!(AuthorityKeypair::parse_secret(SRI_PUBLIC).is_err());
        let fresh = AuthorityKeypair::generate();
        let again = AuthorityKeypair::parse_secret(&fresh.secret_string()).unwrap();
        assert_eq!(again.public, fresh.public);
    }
}
