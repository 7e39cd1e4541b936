//! The audit-signing key: its private half signs checkpoints in the
//! gateway, its public half verifies them anywhere. Both are the PEM files
//! `moat certs init` writes (`audit-key.pem`: PKCS#8, `audit-pub.pem`:
//! SubjectPublicKeyInfo).

use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, ParsedPublicKey};

use crate::chain::hex;
use crate::error::KeyError;

/// Signs checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &self.public.id)
            .finish()
    }
}

impl Signer {
    /// Loads the Ed25519 private key from a PKCS#8 PEM file.
    pub fn load(path: &Path) -> Result<Signer, KeyError> {
        let text = std::fs::read(path).map_err(|e| KeyError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Signer::from_pem(&text).map_err(|reason| KeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key.
    pub fn from_pem(pem_text: &[u8]) -> Result<Signer, String> {
        let block = pem::parse(pem_text).map_err(|e| e.to_string())?;
        if block.tag() != "PRIVATE KEY" {
            return Err(format!("expected a PRIVATE KEY, found {}", block.tag()));
        }
        Signer::from_pkcs8_der(block.contents())
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Signer, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let spki = pair
            .public_key()
            .as_der()
            .map_err(|_| "cannot encode the public key".to_owned())?;
        let public = PublicKey::from_spki_der(spki.as_ref())?;
        Ok(Signer { pair, public })
    }

    /// A fresh key, for tests and benchmarks.
    pub fn generate() -> Signer {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("key generation");
        Signer::from_pkcs8_der(doc.as_ref()).expect("a generated key parses")
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn sign(&self, message: &[u8]) -> String {
        hex(self.pair.sign(message).as_ref())
    }
}

/// Verifies checkpoint signatures.
#[derive(Clone)]
pub struct PublicKey {
    key: ParsedPublicKey,
    spki: Vec<u8>,
    id: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("id", &self.id).finish()
    }
}

impl PublicKey {
    /// Loads a SubjectPublicKeyInfo PEM file (`audit-pub.pem`).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::fs::read(path).map_err(|e| KeyError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        PublicKey::from_pem(&text).map_err(|reason| KeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn from_pem(pem_text: &[u8]) -> Result<PublicKey, String> {
        let block = pem::parse(pem_text).map_err(|e| e.to_string())?;
        if block.tag() != "PUBLIC KEY" {
            return Err(format!("expected a PUBLIC KEY, found {}", block.tag()));
        }
        PublicKey::from_spki_der(block.contents())
    }

    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        let key = ParsedPublicKey::new(&ED25519, der)
            .map_err(|e| format!("not an Ed25519 public key: {e}"))?;
        // Re-encoded, so the id does not depend on how the file spelled it.
        let spki = key
            .as_der()
            .map_err(|_| "cannot encode the public key".to_owned())?
            .as_ref()
            .to_vec();
        let id = hex(&digest::digest(&digest::SHA256, &spki).as_ref()[..8]);
        Ok(PublicKey { key, spki, id })
    }

    /// The key's id as checkpoints name it: hex of the first 8 bytes of the
    /// SHA-256 of its SubjectPublicKeyInfo DER.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SubjectPublicKeyInfo PEM, as `audit-pub.pem` holds it.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki.clone()))
    }

    pub(crate) fn verify(&self, message: &[u8], sig_hex: &str) -> bool {
        match crate::chain::unhex(sig_hex) {
            Some(sig) => self.key.verify_sig(message, &sig).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_public_half_only() {
        let signer = Signer::generate();
        let public = PublicKey::from_pem(signer.public_key().to_pem().as_bytes()).unwrap();
        assert_eq!(public.id(), signer.public_key().id());
        let sig = signer.sign(b"message");
        assert!(public.verify(b"message", &sig));
        assert!(!public.verify(b"messagE", &sig));
        assert!(!Signer::generate().public_key().verify(b"message", &sig));
        assert!(!public.verify(b"message", "zz"));
    }

    #[test]
    fn a_private_key_is_not_taken_for_a_public_one() {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        assert!(Signer::from_pem(pem_text.as_bytes()).is_ok());
        assert!(PublicKey::from_pem(pem_text.as_bytes()).is_err());
    }
}
