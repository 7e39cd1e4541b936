//! One repository on one registry, for one operation: where the registry
//! answers (HTTPS, or for an insecure registry HTTPS unverified then
//! plain HTTP), how it wants to be authenticated (found by asking `/v2/`
//! first, as Docker does), and the distribution API's calls on manifests
//! and blobs.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::auth::{Challenge, Credentials, TokenAnswer, parse_challenge};
use super::error::error_message;
use super::transport::{self, Body, Origin, Scheme, Transport, encode, read_body};
use super::{Registry, RegistryConfig, RegistryError};

/// Media types a pull accepts for a manifest, best first.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The biggest manifest or index read (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The biggest error body or token answer read.
const MAX_SMALL_BODY: usize = 1 << 20;
const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("moat/", env!("CARGO_PKG_VERSION"));

/// What a blob upload started with a mount request turned into.
pub enum Mount {
    /// The registry linked the blob from the other repository.
    Mounted,
    /// It did not; upload to this location instead.
    Upload(String),
}

pub struct Session {
    transport: Arc<Transport>,
    config: RegistryConfig,
    origin: Origin,
    /// The registry as references name it (`127.0.0.1:5000`, `docker.io`).
    registry: String,
    /// The repository's path on the registry (`team/app`, `library/busybox`).
    repository: String,
    credentials: Credentials,
    /// The token scopes this operation needs.
    scopes: Vec<String>,
    authorization: Mutex<Option<String>>,
}

impl Session {
    /// Finds how to reach `domain` and authenticates for `scopes` (e.g.
    /// `repository:team/app:pull,push`) on `repository`.
    pub async fn open(
        registry: &Registry,
        domain: &str,
        repository: &str,
        credentials: Credentials,
        scopes: Vec<String>,
    ) -> Result<Session, RegistryError> {
        let (origin, ping) = reach(registry, domain).await?;
        let session = Session {
            transport: registry.transport().clone(),
            config: registry.config().clone(),
            origin,
            registry: domain.to_owned(),
            repository: repository.to_owned(),
            credentials,
            scopes,
            authorization: Mutex::new(None),
        };
        session.answer_ping(ping).await?;
        Ok(session)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// After `GET /v2/`: nothing to do on 200, authenticate on 401.
    async fn answer_ping(&self, ping: Response<Incoming>) -> Result<(), RegistryError> {
        match ping.status() {
            status if status.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => {
                let challenge = challenge_of(&ping);
                drop(ping);
                match challenge {
                    Some(challenge) => self.authenticate(&challenge).await,
                    None => Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        message: "the registry asks for a login it does not describe".into(),
                    }),
                }
            }
            _ => Err(self.failure("GET /v2/", ping).await),
        }
    }

    /// Sets the Authorization header for `challenge`: Basic with the
    /// password, or a Bearer token from the challenge's realm.
    async fn authenticate(&self, challenge: &Challenge) -> Result<(), RegistryError> {
        let value = match challenge {
            Challenge::Basic => match self.credentials.basic() {
                Some(basic) => basic,
                None if matches!(self.credentials, Credentials::Token(_)) => {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        message: "the registry wants a password, not a token".into(),
                    });
                }
                // Anonymous: the calls will say what is refused.
                None => return Ok(()),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                if let Credentials::Token(token) = &self.credentials {
                    format!("Bearer {token}")
                } else {
                    let mut scopes = self.scopes.clone();
                    if let Some(scope) = scope
                        && !scopes.contains(scope)
                    {
                        scopes.push(scope.clone());
                    }
                    let answer = fetch_token(
                        &self.transport,
                        &self.config,
                        &self.registry,
                        realm,
                        service.as_deref(),
                        &scopes,
                        &self.credentials,
                        false,
                    )
                    .await?;
                    let token = answer.bearer().ok_or_else(|| {
                        RegistryError::protocol(realm.as_str(), "the token service gave no token")
                    })?;
                    format!("Bearer {token}")
                }
            }
        };
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    fn authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/v2/{}/{rest}", self.repository)
    }

    /// Sends a body-less request to the registry, authorized; on a 401
    /// with a Bearer challenge (a scope the token lacks), authenticates
    /// again and retries once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<(Bytes, &str)>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut retried = false;
        loop {
            let authorization = self.authorization();
            let make = || {
                let mut builder = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header(header::USER_AGENT, USER_AGENT);
                for (name, value) in headers {
                    builder = builder.header(name, *value);
                }
                if let Some(auth) = &authorization {
                    builder = builder.header(header::AUTHORIZATION, auth);
                }
                let body = match &body {
                    Some((bytes, content_type)) => {
                        builder = builder
                            .header(header::CONTENT_TYPE, *content_type)
                            .header(header::CONTENT_LENGTH, bytes.len());
                        transport::full(bytes.clone())
                    }
                    None => transport::empty(),
                };
                builder.body(body).expect("a valid request")
            };
            let response = self.transport.send(&self.origin, &make).await?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !retried
                && let Some(challenge @ Challenge::Bearer { .. }) = challenge_of(&response)
            {
                drop(response);
                self.authenticate(&challenge).await?;
                retried = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// An error for an answer the operation cannot use.
    pub async fn failure(&self, what: &str, response: Response<Incoming>) -> RegistryError {
        let status = response.status();
        let body = read_body(what, response, MAX_SMALL_BODY)
            .await
            .unwrap_or_default();
        let message = error_message(&body).unwrap_or_else(|| match status {
            // A HEAD answer has no body to say it: Docker's words.
            StatusCode::UNAUTHORIZED => "unauthorized: authentication required".into(),
            StatusCode::FORBIDDEN => "denied: requested access to the resource is denied".into(),
            _ => status
                .canonical_reason()
                .unwrap_or("unexpected answer")
                .to_ascii_lowercase(),
        });
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                message,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                what: what.to_owned(),
                message,
            },
            _ => RegistryError::Status {
                registry: self.registry.clone(),
                what: what.to_owned(),
                status: status.as_u16(),
                message,
            },
        }
    }

    /// `GET /v2/<name>/manifests/<reference>`: the bytes, the media type
    /// (the `Content-Type`), and the `Docker-Content-Digest` if given.
    pub async fn manifest(
        &self,
        reference: &str,
    ) -> Result<(Bytes, String, Option<String>), RegistryError> {
        let what = format!(
            "manifest for {}/{}:{reference}",
            self.registry, self.repository
        );
        let response = self
            .call(
                Method::GET,
                &self.path(&format!("manifests/{reference}")),
                // One header each: distribution 2.8 reads each Accept
                // header as one media type.
                &MANIFEST_TYPES.map(|t| (header::ACCEPT, t)),
                None,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(&what, response).await);
        }
        let content_type = header_text(&response, header::CONTENT_TYPE.as_str())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let digest = header_text(&response, "docker-content-digest");
        let bytes = read_body(&what, response, MAX_MANIFEST_BYTES).await?;
        Ok((bytes, content_type, digest))
    }

    /// `GET /v2/<name>/blobs/<digest>`, following redirects (to a CDN, say)
    /// without the registry's credentials.
    pub async fn blob(&self, digest: &str) -> Result<Response<Incoming>, RegistryError> {
        let what = format!("blob {digest}");
        let mut response = self
            .call(
                Method::GET,
                &self.path(&format!("blobs/{digest}")),
                &[],
                None,
            )
            .await?;
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                break;
            }
            let location = header_text(&response, header::LOCATION.as_str())
                .ok_or_else(|| RegistryError::protocol(&what, "a redirect without Location"))?;
            drop(response);
            let (origin, path) = if location.starts_with('/') {
                (self.origin.clone(), location)
            } else {
                Origin::parse_url(
                    &location,
                    self.origin.scheme == Scheme::HttpsUnverified,
                    &|host| self.config.is_insecure(host),
                )?
            };
            let authorization = (origin == self.origin)
                .then(|| self.authorization())
                .flatten();
            let make = || {
                let mut builder = Request::builder()
                    .uri(path.as_str())
                    .header(header::USER_AGENT, USER_AGENT);
                if let Some(auth) = &authorization {
                    builder = builder.header(header::AUTHORIZATION, auth);
                }
                builder.body(transport::empty()).expect("a valid request")
            };
            response = self.transport.send(&origin, &make).await?;
        }
        if !response.status().is_success() {
            return Err(self.failure(&what, response).await);
        }
        Ok(response)
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: whether the repository has it.
    pub async fn blob_exists(&self, digest: &str) -> Result<bool, RegistryError> {
        let response = self
            .call(
                Method::HEAD,
                &self.path(&format!("blobs/{digest}")),
                &[],
                None,
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failure(&format!("blob {digest}"), response).await),
        }
    }

    /// `POST /v2/<name>/blobs/uploads/`, with `mount` and `from` when the
    /// blob may be linked from another repository of the registry.
    pub async fn start_upload(&self, mount: Option<(&str, &str)>) -> Result<Mount, RegistryError> {
        let query = match mount {
            Some((digest, from)) => format!("?mount={}&from={}", encode(digest), encode(from)),
            None => String::new(),
        };
        let response = self
            .call(
                Method::POST,
                &self.path(&format!("blobs/uploads/{query}")),
                &[],
                Some((Bytes::new(), "application/octet-stream")),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => {
                let location =
                    header_text(&response, header::LOCATION.as_str()).ok_or_else(|| {
                        RegistryError::protocol("blob upload", "no Location in the answer")
                    })?;
                Ok(Mount::Upload(location))
            }
            _ => Err(self.failure("blob upload", response).await),
        }
    }

    /// Uploads a whole blob to `location` (from [`Session::start_upload`])
    /// in one `PUT ...?digest=`.
    pub async fn upload(
        &self,
        location: &str,
        digest: &str,
        size: u64,
        body: Body,
    ) -> Result<(), RegistryError> {
        let (origin, path) = if location.starts_with('/') {
            (self.origin.clone(), location.to_owned())
        } else {
            Origin::parse_url(
                location,
                self.origin.scheme == Scheme::HttpsUnverified,
                &|host| self.config.is_insecure(host),
            )?
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{separator}digest={}", encode(digest));
        let mut builder = Request::builder()
            .method(Method::PUT)
            .uri(path)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size);
        if origin == self.origin
            && let Some(auth) = self.authorization()
        {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let request = builder
            .body(body)
            .map_err(|e| RegistryError::protocol("blob upload", e))?;
        // Ten minutes, and a second more per 100 kB.
        let limit = std::time::Duration::from_secs(600 + size / 100_000);
        let response = self
            .transport
            .send_streaming(&origin, request, limit)
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.failure(&format!("blob {digest}"), response).await);
        }
        Ok(())
    }

    /// `PUT /v2/<name>/manifests/<tag>`: the registry's digest of it.
    pub async fn put_manifest(
        &self,
        tag: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Option<String>, RegistryError> {
        let what = format!("manifest {}/{}:{tag}", self.registry, self.repository);
        let response = self
            .call(
                Method::PUT,
                &self.path(&format!("manifests/{tag}")),
                &[],
                Some((bytes, media_type)),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.failure(&what, response).await);
        }
        Ok(header_text(&response, "docker-content-digest"))
    }
}

/// Reaches a registry: `GET /v2/` over HTTPS; for an insecure registry,
/// HTTPS without certificate checks and then plain HTTP.
async fn reach(
    registry: &Registry,
    domain: &str,
) -> Result<(Origin, Response<Incoming>), RegistryError> {
    let host = Registry::api_host(domain);
    let schemes: &[Scheme] = if registry.config().is_insecure(domain) {
        &[Scheme::HttpsUnverified, Scheme::Http]
    } else {
        &[Scheme::Https]
    };
    let mut last = None;
    for &scheme in schemes {
        let origin = Origin::new(scheme, host)?;
        let make = || {
            Request::builder()
                .uri("/v2/")
                .header(header::USER_AGENT, USER_AGENT)
                .body(transport::empty())
                .expect("a valid request")
        };
        match registry.transport().send(&origin, &make).await {
            Ok(response) => return Ok((origin, response)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one scheme is tried"))
}

/// The challenge of a 401 answer.
fn challenge_of(response: &Response<Incoming>) -> Option<Challenge> {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge)
}

fn header_text(response: &Response<Incoming>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Asks a token service (a Bearer challenge's realm) for a token: `GET`
/// with Basic credentials or anonymously, or, with a refresh token,
/// OAuth2's `POST` (as Docker does). `offline` asks for a refresh token
/// too (what `docker login` keeps as its identity token).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_token(
    transport: &Transport,
    config: &RegistryConfig,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    credentials: &Credentials,
    offline: bool,
) -> Result<TokenAnswer, RegistryError> {
    let (origin, realm_path) = Origin::parse_url(realm, config.is_insecure(registry), &|host| {
        config.is_insecure(host)
    })?;
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Some(service) = service {
        params.push(("service", service));
    }
    for scope in scopes {
        params.push(("scope", scope));
    }
    let query = |params: &[(&str, &str)]| {
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    type Make = Box<dyn Fn() -> Request<Body> + Send + Sync>;
    let request: Make = match credentials {
        Credentials::Refresh { token, .. } => {
            let mut form = params.clone();
            form.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", "moat"),
            ]);
            let body = Bytes::from(query(&form));
            Box::new(move || {
                Request::builder()
                    .method(Method::POST)
                    .uri(realm_path.as_str())
                    .header(header::USER_AGENT, USER_AGENT)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(header::CONTENT_LENGTH, body.len())
                    .body(transport::full(body.clone()))
                    .expect("a valid request")
            })
        }
        _ => {
            let mut params = params.clone();
            let account;
            if let Credentials::Password { username, .. } = credentials {
                account = username.clone();
                params.push(("account", &account));
                if offline {
                    params.extend([("offline_token", "true"), ("client_id", "moat")]);
                }
            }
            let separator = if realm_path.contains('?') { '&' } else { '?' };
            let path = format!("{realm_path}{separator}{}", query(&params));
            let basic = credentials.basic();
            Box::new(move || {
                let mut builder = Request::builder()
                    .uri(path.as_str())
                    .header(header::USER_AGENT, USER_AGENT);
                if let Some(basic) = &basic {
                    builder = builder.header(header::AUTHORIZATION, basic);
                }
                builder.body(transport::empty()).expect("a valid request")
            })
        }
    };
    let response = transport.send(&origin, &*request).await?;
    let status = response.status();
    let body = read_body("token", response, MAX_SMALL_BODY).await?;
    if !status.is_success() {
        let message = error_message(&body)
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["details"].as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("refused")
                    .to_ascii_lowercase()
            });
        return Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                registry: registry.to_owned(),
                message: if message.starts_with("unauthorized") {
                    message
                } else {
                    format!("unauthorized: {message}")
                },
            },
            _ => RegistryError::Status {
                registry: registry.to_owned(),
                what: "token".into(),
                status: status.as_u16(),
                message,
            },
        });
    }
    serde_json::from_slice(&body).map_err(|e| RegistryError::protocol("token answer", e))
}

/// Used by `login`: the ping's answer alone, to read its challenge.
pub(crate) async fn ping(
    registry: &Registry,
    domain: &str,
) -> Result<(Origin, StatusCode, Option<Challenge>), RegistryError> {
    let (origin, response) = reach(registry, domain).await?;
    let status = response.status();
    let challenge = challenge_of(&response);
    Ok((origin, status, challenge))
}

/// Sends `GET /v2/` with a Basic header: whether the registry takes it.
pub(crate) async fn basic_ping(
    registry: &Registry,
    origin: &Origin,
    basic: &str,
) -> Result<StatusCode, RegistryError> {
    let value = HeaderValue::from_str(basic)
        .map_err(|_| RegistryError::BadRequest("credentials that are not text".into()))?;
    let make = || {
        Request::builder()
            .uri("/v2/")
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::AUTHORIZATION, value.clone())
            .body(transport::empty())
            .expect("a valid request")
    };
    Ok(registry.transport().send(origin, &make).await?.status())
}
