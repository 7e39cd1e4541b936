//! Credentials as the docker CLI sends them (`X-Registry-Auth`, the body
//! of `POST /auth`), and the two ways a registry asks for them
//! (`WWW-Authenticate`): Basic, or Bearer with a token service (Docker
//! Hub's flow: ask the realm for a token for the scopes needed, with the
//! user's password or refresh token, or anonymously).

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;

/// Docker's `AuthConfig` (`api/types/registry`), as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// `base64(user:password)`, as `~/.docker/config.json` stores it.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub serveraddress: String,
    #[serde(default)]
    pub identitytoken: String,
    #[serde(default)]
    pub registrytoken: String,
}

impl AuthConfig {
    /// Reads `X-Registry-Auth`: base64url of the JSON (with or without
    /// padding; plain base64 is accepted too). Empty means anonymous.
    pub fn from_header(value: &str) -> Result<AuthConfig, RegistryError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(AuthConfig::default());
        }
        let engines = [
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let json = engines
            .iter()
            .find_map(|e| e.decode(value).ok())
            .ok_or_else(|| RegistryError::BadRequest("X-Registry-Auth is not base64".into()))?;
        // The docker CLI sends `{}` (or `null`) when it has no credentials.
        if json.trim_ascii().is_empty() || json.trim_ascii() == b"null" {
            return Ok(AuthConfig::default());
        }
        serde_json::from_slice(&json)
            .map_err(|e| RegistryError::BadRequest(format!("X-Registry-Auth: {e}")))
    }

    /// What to authenticate with.
    pub fn credentials(&self) -> Result<Credentials, RegistryError> {
        if !self.registrytoken.is_empty() {
            return Ok(Credentials::Token(self.registrytoken.clone()));
        }
        if !self.identitytoken.is_empty() {
            return Ok(Credentials::Refresh {
                username: self.username.clone(),
                token: self.identitytoken.clone(),
            });
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Ok(Credentials::Password {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| RegistryError::BadRequest("auth is not base64".into()))?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| RegistryError::BadRequest("auth is not user:password".into()))?;
            return Ok(Credentials::Password {
                username: username.to_owned(),
                password: password.to_owned(),
            });
        }
        Ok(Credentials::Anonymous)
    }
}

/// What the engine authenticates to a registry with. Never logged.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Password {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`) from an earlier login.
    Refresh {
        username: String,
        token: String,
    },
    /// A bearer token to send as it is.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Password { .. } => "Password(<redacted>)",
            Credentials::Refresh { .. } => "Refresh(<redacted>)",
            Credentials::Token(_) => "Token(<redacted>)",
        })
    }
}

impl Credentials {
    /// `Basic base64(user:password)`, when these are a password.
    pub fn basic(&self) -> Option<String> {
        match self {
            Credentials::Password { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic
/// realm="..."`; other schemes are `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `key="quoted, \"value\"",key2=token` → pairs.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        params.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    params
}

/// A token service's answer (`token` or OAuth2's `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: String,
}

impl TokenAnswer {
    pub fn bearer(&self) -> Option<&str> {
        [&self.token, &self.access_token]
            .into_iter()
            .find(|t| !t.is_empty())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_and_registry_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        let c =
            parse_challenge(r#"bearer realm=https://x/t, scope="a:b,c" ,service="s\"q""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://x/t".into(),
                service: Some("s\"q".into()),
                scope: Some("a:b,c".into()),
            }
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn x_registry_auth_as_the_cli_sends_it() {
        let json = r#"{"username":"alice","password":"s3cr=t?","serveraddress":"127.0.0.1:5000"}"#;
        let url = base64::engine::general_purpose::URL_SAFE.encode(json);
        let config = AuthConfig::from_header(&url).unwrap();
        assert_eq!(config.serveraddress, "127.0.0.1:5000");
        match config.credentials().unwrap() {
            Credentials::Password { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("alice", "s3cr=t?"))
            }
            other => panic!("{other:?}"),
        }
        let no_pad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        assert!(AuthConfig::from_header(&no_pad).is_ok());

        for empty in ["", "e30=", "bnVsbA=="] {
            let config = AuthConfig::from_header(empty).unwrap();
            assert!(matches!(
                config.credentials().unwrap(),
                Credentials::Anonymous
            ));
        }
        let token = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"identitytoken":"r1","username":"<token>"}"#);
        assert!(matches!(
            AuthConfig::from_header(&token)
                .unwrap()
                .credentials()
                .unwrap(),
            Credentials::Refresh { .. }
        ));
        let auth = base64::engine::general_purpose::URL_SAFE.encode(r#"{"auth":"Ym9iOnB3"}"#);
        match AuthConfig::from_header(&auth)
            .unwrap()
            .credentials()
            .unwrap()
        {
            Credentials::Password { username, password } => {
                assert_eq!((username.as_str(), password.as_str()), ("bob", "pw"))
            }
            other => panic!("{other:?}"),
        }
        assert!(AuthConfig::from_header("%%%").is_err());
        let credentials = Credentials::Password {
            username: "a".into(),
            password: "b".into(),
        };
        assert!(!format!("{credentials:?}").contains('b'));
        assert_eq!(credentials.basic().unwrap(), "Basic YTpi");
    }
}
