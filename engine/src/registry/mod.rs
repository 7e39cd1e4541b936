//! A client of the OCI distribution API (what `docker pull`, `push` and
//! `login` talk to), small and on hyper: HTTPS with rustls (aws-lc-rs,
//! the system's CA store), plain HTTP only for registries configured
//! insecure, anonymous, Basic and Bearer-token (Docker Hub's challenge
//! flow) authentication.
//!
//! - [`transport`]: connections (TLS or not), a small pool, timeouts.
//! - [`auth`]: `X-Registry-Auth`, `WWW-Authenticate` challenges, tokens.
//! - [`session`]: one repository on one registry: manifests and blobs.
//! - [`progress`]: Docker's JSON progress messages.
//! - [`pull`], [`push`], [`login`]: the three operations, onto the
//!   image store.

pub mod auth;
mod error;
pub mod login;
pub mod progress;
pub mod pull;
pub mod push;
pub mod session;
pub mod transport;

use std::sync::Arc;

pub use auth::{AuthConfig, Credentials};
pub use error::RegistryError;

use transport::Transport;

/// Docker Hub's registry name in references, and where its API is.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Which registries may be reached without verified TLS.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `HOST:PORT` (or `HOST`) of registries reached like dockerd's
    /// `insecure-registries`: HTTPS without certificate checks, falling
    /// back to plain HTTP. Loopback hosts are always insecure, as dockerd's
    /// default `127.0.0.0/8` makes them.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    /// Whether `host` (`HOST[:PORT]`, as in a reference) is insecure.
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = host_of(host);
        is_loopback(bare)
            || self
                .insecure
                .iter()
                .any(|entry| entry == host || (!entry.contains(':') && entry == bare))
    }
}

/// The host of `HOST[:PORT]` (`[::1]:5000` → `::1`).
pub(crate) fn host_of(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority, |(host, _)| host)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the engine shares for every registry operation: the TLS settings,
/// the connection pool and which registries are insecure.
pub struct Registry {
    config: RegistryConfig,
    transport: Arc<Transport>,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Registry {
        Registry {
            config,
            transport: Arc::new(Transport::new()),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub(crate) fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The host and port to call for a reference's domain.
    pub(crate) fn api_host(domain: &str) -> &str {
        if domain == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            domain
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let config = RegistryConfig {
            insecure: vec!["registry.lan:5000".into(), "mirror.lan".into()],
        };
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "127.1.2.3",
            "[::1]:5000",
            "registry.lan:5000",
            "mirror.lan:443",
            "mirror.lan",
        ] {
            assert!(config.is_insecure(host), "{host}");
        }
        for host in [
            "registry.lan:5001",
            "registry.lan",
            "docker.io",
            "10.0.0.1:5000",
        ] {
            assert!(!config.is_insecure(host), "{host}");
        }
    }
}
