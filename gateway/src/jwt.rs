//! Optional bearer-token authentication for machines without a client
//! certificate (off unless `--jwt-key` is given). A token must be signed
//! by the configured key, name the configured issuer (and audience, if
//! set), be unexpired, and carry a subject; it then yields the same kind
//! of caller a certificate does: user = `sub`, groups = the `groups`
//! claim. A connection that presented a certificate is that certificate's
//! caller, whatever its requests carry.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::tls::Caller;

#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// PEM public key: EC P-256 (ES256), Ed25519 (EdDSA) or RSA (RS256).
    pub key_pem: String,
    pub issuer: String,
    pub audience: Option<String>,
}

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    groups: Vec<String>,
}

impl JwtVerifier {
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, String> {
        let pem = config.key_pem.as_bytes();
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else {
            return Err("the JWT key is not a PEM EC P-256, Ed25519 or RSA public key".into());
        };
        if config.issuer.is_empty() {
            return Err("a JWT issuer is required".into());
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[config.issuer.as_str()]);
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience.as_str()]),
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        Ok(JwtVerifier { key, validation })
    }

    /// The caller an `Authorization` header value names, or why not.
    pub fn caller(&self, authorization: &str) -> Result<Caller, String> {
        let token = authorization
            .strip_prefix("Bearer ")
            .ok_or_else(|| "the Authorization header is not a bearer token".to_owned())?;
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| format!("the bearer token was refused: {e}"))?;
        let claims = data.claims;
        let valid_name = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        };
        if !valid_name(&claims.sub) || !claims.groups.iter().all(|g| valid_name(g)) {
            return Err("the bearer token's subject or groups are not valid names".into());
        }
        Ok(Caller {
            user: claims.sub,
            groups: claims.groups,
            auth: moat_audit::Auth::Jwt,
            serial: None,
            fingerprint: None,
        })
    }
}
