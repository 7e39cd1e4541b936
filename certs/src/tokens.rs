//! One-time enrollment tokens: how someone without a certificate gets one.
//!
//! An admin makes a token for a user and their groups (`moat certs token`)
//! and hands it over; the user's `moat login` sends it with a certificate
//! signing request, and the signer redeems it. The token decides who the
//! certificate names; the request contributes only its public key.
//!
//! `tokens.json` (0600, under the directory lock like the index) holds the
//! SHA-256 of each token, never the token: a copy of the file lets nobody
//! enroll. A token is marked used, on disk, before anything is signed, so a
//! crash can waste a token but never honour one twice. Expired tokens are
//! dropped whenever the file is written (atomically, like every PKI file).

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::authority::Issued;
use crate::csr::Csr;
use crate::inspect::hex_lower;
use crate::names::Subject;
use crate::store::{DirLock, KEY_MODE};
use crate::{Pki, PkiError, ttl};

pub const TOKENS: &str = "tokens.json";

/// The longest a token may wait to be used: it is a bearer secret sent over
/// chat or email, so it should not outlive the day it was made.
pub const MAX_TOKEN_TTL: Duration = Duration::hours(24);

/// What `tokens.json` knows about one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

impl Pki {
    /// Makes a one-time token that enrolls `subject` once within `ttl`
    /// (at most [`MAX_TOKEN_TTL`]). Returns the token: 32 random bytes as
    /// hex, shown once and stored only as its hash.
    pub fn create_token(&self, subject: &Subject, ttl: Duration) -> Result<String, PkiError> {
        self.create_token_at(subject, ttl, OffsetDateTime::now_utc())
    }

    fn create_token_at(
        &self,
        subject: &Subject,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<String, PkiError> {
        if ttl <= Duration::ZERO {
            return Err(PkiError::InvalidTtl {
                value: ttl::format(ttl),
                reason: "must be longer than zero".into(),
            });
        }
        if ttl > MAX_TOKEN_TTL {
            return Err(PkiError::TtlOverMaximum {
                requested: ttl::format(ttl),
                maximum: ttl::format(MAX_TOKEN_TTL),
            });
        }
        // The names were checked when the Subject was made; check again so
        // a token can never carry a name the signer would refuse later.
        let subject = Subject::new(&subject.user, &subject.groups)?;
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| PkiError::Tls("no randomness".into()))?;
        let token = hex_lower(&secret);
        let _lock = DirLock::acquire(self.dir())?;
        let mut file = self.load_tokens()?;
        file.tokens.push(TokenRecord {
            sha256: token_hash(&token),
            user: subject.user,
            groups: subject.groups,
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
        });
        self.write_tokens(file, now)?;
        Ok(token)
    }

    /// Redeems a token: signs the CSR's public key (its signature must
    /// verify) for the token's user and groups, whatever subject the CSR
    /// asks for, with the default client TTL. An unknown, expired or used
    /// token is refused, each with its own error.
    pub fn redeem_token(&self, token: &str, csr_pem: &str) -> Result<Issued, PkiError> {
        self.redeem_token_at(token, csr_pem, OffsetDateTime::now_utc())
    }

    fn redeem_token_at(
        &self,
        token: &str,
        csr_pem: &str,
        now: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        // A request that cannot be signed does not use the token up.
        let csr = Csr::parse(csr_pem)?;
        let public_key = csr.public_key()?;
        let validity = self.client_validity(None)?;
        let hash = token_hash(token.trim());
        let lock = DirLock::acquire(self.dir())?;
        let mut file = self.load_tokens()?;
        let record = file
            .tokens
            .iter_mut()
            .find(|t| t.sha256 == hash)
            .ok_or(PkiError::UnknownToken)?;
        if let Some(used_at) = record.used_at {
            return Err(PkiError::TokenUsed(rfc3339(used_at)));
        }
        if now >= record.expires_at {
            return Err(PkiError::TokenExpired(rfc3339(record.expires_at)));
        }
        record.used_at = Some(now);
        let subject = Subject::new(&record.user, &record.groups)?;
        self.write_tokens(file, now)?;
        self.sign_client(&lock, &subject, validity, &public_key)
    }

    fn load_tokens(&self) -> Result<TokenFile, PkiError> {
        let path = self.path(TOKENS);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| PkiError::corrupt(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(PkiError::io(&path)(e)),
        }
    }

    /// Writes the file without the tokens that have expired by `now`.
    fn write_tokens(&self, mut file: TokenFile, now: OffsetDateTime) -> Result<(), PkiError> {
        file.tokens.retain(|t| t.expires_at > now);
        self.write_json(TOKENS, &file, KEY_MODE)
    }
}

fn token_hash(token: &str) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use crate::testing::pki;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::enroll::key_and_csr;
    use crate::inspect::CertSummary;

    fn bob() -> Subject {
        Subject::new("bob", &["developer".to_owned()]).unwrap()
    }

    fn csr() -> String {
        key_and_csr().unwrap().1
    }

    #[test]
    fn a_token_enrolls_its_subject_once() {
        let (_tmp, pki) = pki();
        let token = pki.create_token(&bob(), Duration::minutes(15)).unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));

        let issued = pki.redeem_token(&token, &csr()).unwrap();
        let der = crate::authority::cert_der(&issued.cert_pem).unwrap();
        let cert = CertSummary::from_der(&der).unwrap();
        // The token's subject, not the CSR's placeholder.
        assert_eq!(cert.common_name, "bob");
        assert_eq!(cert.organizations, ["developer"]);
        assert!(cert.client_auth && !cert.server_auth && !cert.is_ca);
        let ttl = cert.not_after - OffsetDateTime::now_utc();
        assert!(ttl > Duration::hours(11) && ttl <= Duration::hours(12));
        assert!(pki.list().unwrap().iter().any(|c| c.serial == cert.serial));

        let again = pki.redeem_token(&token, &csr()).unwrap_err();
        assert!(matches!(again, PkiError::TokenUsed(_)), "{again}");
        assert_eq!(pki.list().unwrap().len(), 2, "server + bob, nothing more");
    }

    #[test]
    fn only_the_hash_is_stored_and_privately() {
        let (_tmp, pki) = pki();
        let token = pki.create_token(&bob(), Duration::minutes(15)).unwrap();
        let path = pki.path(TOKENS);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token));
        assert!(text.contains(&token_hash(&token)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn unknown_and_malformed_tokens_are_refused() {
        let (_tmp, pki) = pki();
        pki.create_token(&bob(), Duration::minutes(15)).unwrap();
        for token in ["", "00", &"ab".repeat(32), "not a token"] {
            let err = pki.redeem_token(token, &csr()).unwrap_err();
            assert!(matches!(err, PkiError::UnknownToken), "{token:?}: {err}");
        }
        assert_eq!(pki.list().unwrap().len(), 1);
    }

    #[test]
    fn an_expired_token_is_refused_then_pruned() {
        let (_tmp, pki) = pki();
        let past = OffsetDateTime::now_utc() - Duration::hours(2);
        let token = pki
            .create_token_at(&bob(), Duration::hours(1), past)
            .unwrap();
        let err = pki.redeem_token(&token, &csr()).unwrap_err();
        assert!(matches!(err, PkiError::TokenExpired(_)), "{err}");
        assert!(!err.to_string().contains(&token));

        // The next write drops it; a fresh token is untouched.
        let fresh = pki.create_token(&bob(), Duration::minutes(5)).unwrap();
        let file = pki.load_tokens().unwrap();
        assert_eq!(file.tokens.len(), 1);
        assert_eq!(file.tokens[0].sha256, token_hash(&fresh));
        let err = pki.redeem_token(&token, &csr()).unwrap_err();
        assert!(matches!(err, PkiError::UnknownToken), "{err}");
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        let (_tmp, pki) = pki();
        let err = pki.create_token(&bob(), Duration::hours(25)).unwrap_err();
        assert!(matches!(err, PkiError::TtlOverMaximum { .. }), "{err}");
        let err = pki.create_token(&bob(), Duration::ZERO).unwrap_err();
        assert!(matches!(err, PkiError::InvalidTtl { .. }), "{err}");
        pki.create_token(&bob(), MAX_TOKEN_TTL).unwrap();
    }

    #[test]
    fn a_bad_request_does_not_use_the_token_up() {
        let (_tmp, pki) = pki();
        let token = pki.create_token(&bob(), Duration::minutes(15)).unwrap();
        let err = pki.redeem_token(&token, "not a CSR").unwrap_err();
        assert!(matches!(err, PkiError::InvalidCsr(_)), "{err}");
        pki.redeem_token(&token, &csr()).unwrap();
    }
}
