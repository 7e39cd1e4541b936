//! `docker login` (`POST /auth`): the credentials are tried against the
//! registry the way it asks for them (Basic on `/v2/`, or its token
//! service), and kept nowhere: the CLI stores them and sends them again
//! with each pull and push.

use hyper::StatusCode;

use super::auth::{AuthConfig, Challenge, Credentials};
use super::session::{basic_ping, fetch_token, ping};
use super::{DOCKER_HUB, Registry, RegistryError};

/// What a successful login gives back.
#[derive(Debug, Default)]
pub struct LoggedIn {
    /// A refresh token from the registry's token service, which the CLI
    /// keeps instead of the password.
    pub identity_token: Option<String>,
}

/// The registry a `serveraddress` names, as references name it:
/// `https://index.docker.io/v1/` → `docker.io`, `http://host:5000/` →
/// `host:5000`.
pub fn registry_of(server_address: &str) -> Result<String, RegistryError> {
    let address = server_address.trim();
    let address = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = address
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "" | "index.docker.io" | "docker.io" | "registry-1.docker.io" => Ok(DOCKER_HUB.into()),
        host if host.contains(['@', '?', '#', ' ']) => Err(RegistryError::BadRequest(format!(
            "invalid registry address {server_address:?}"
        ))),
        host => Ok(host.to_owned()),
    }
}

pub async fn login(registry: &Registry, config: &AuthConfig) -> Result<LoggedIn, RegistryError> {
    let domain = registry_of(&config.serveraddress)?;
    let credentials = config.credentials()?;
    if matches!(credentials, Credentials::Anonymous) {
        return Err(RegistryError::BadRequest(
            "a username and password are needed to log in".into(),
        ));
    }
    let (origin, status, challenge) = ping(registry, &domain).await?;
    let refused = || RegistryError::Unauthorized {
        registry: domain.clone(),
        message: format!(
            "login attempt to {} failed with status: 401 Unauthorized",
            origin.url("/v2/")
        ),
    };
    if status.is_success() {
        // A registry that wants no login takes any.
        return Ok(LoggedIn::default());
    }
    if status != StatusCode::UNAUTHORIZED {
        return Err(RegistryError::Status {
            registry: domain.clone(),
            what: format!("login attempt to {}", origin.url("/v2/")),
            status: status.as_u16(),
            message: status
                .canonical_reason()
                .unwrap_or("unexpected answer")
                .to_owned(),
        });
    }
    match challenge {
        Some(Challenge::Basic) => {
            let basic = credentials.basic().ok_or_else(refused)?;
            let status = basic_ping(registry, &origin, &basic).await?;
            if status.is_success() {
                Ok(LoggedIn::default())
            } else {
                Err(refused())
            }
        }
        Some(Challenge::Bearer { realm, service, .. }) => {
            let answer = fetch_token(
                registry.transport(),
                registry.config(),
                &domain,
                &realm,
                service.as_deref(),
                &[],
                &credentials,
                true,
            )
            .await
            .map_err(|e| match e {
                RegistryError::Unauthorized { .. } => refused(),
                other => other,
            })?;
            Ok(LoggedIn {
                identity_token: Some(answer.refresh_token).filter(|t| !t.is_empty()),
            })
        }
        None => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_registries() {
        for (address, registry) in [
            ("", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
            ("https://Registry.Example/v2/", "registry.example"),
        ] {
            assert_eq!(registry_of(address).unwrap(), registry, "{address}");
        }
        assert!(registry_of("https://u@host/").is_err());
    }
}
