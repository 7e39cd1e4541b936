//! One call through the gateway, outermost step first (DESIGN.md §2):
//! classify, limit, read the body, derive requirements, check ownership,
//! authorize, audit, forward. Every step that refuses answers in Docker's
//! error shape and completes the call's audit record; nothing is forwarded
//! before its decision is on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use moat_api::query::Query;
use moat_api::{
    Access, Action, BodyUse, ClassifyError, Connection, Object, ObjectKind, Route, Server,
};
use moat_policy::{Enforcer, Permission, Requirement};

use crate::body::{self, BodyError, Counted, GatewayBody};
use crate::engine::Engine;
use crate::framing::Framing;
use crate::limits::Limits;
use crate::ownership::{self, Owned};
use crate::record::{CallRecord, Decision, Level, Outcome};
use crate::sessions::Registration;
use crate::tls::Caller;

pub type GatewayResponse = Response<GatewayBody>;

/// What the pipeline needs, shared by every connection.
pub struct Gateway {
    pub engine: Engine,
    pub enforcer: Arc<Enforcer>,
    pub audit: moat_audit::AuditLog,
    pub limits: Limits,
    pub admin: Arc<crate::admin::Admin>,
    pub options: Options,
    jwt: Option<crate::jwt::JwtVerifier>,
    ids: IdSource,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The largest JSON body the gateway buffers and judges.
    pub body_limit: usize,
    /// Actions whose audit records carry the (redacted) request body.
    pub request_level: Vec<Action>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            body_limit: 4 << 20,
            request_level: vec![
                Action::ContainerCreate,
                Action::ContainerUpdate,
                Action::ExecCreate,
                Action::MoatPolicyPut,
            ],
        }
    }
}

/// A refusal: its status and the message the client sees.
struct Refusal {
    status: StatusCode,
    message: String,
    decision: Decision,
}

impl Refusal {
    fn deny(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            decision: Decision::Deny,
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            decision: Decision::Error,
        }
    }
}

impl Gateway {
    pub fn new(
        engine: Engine,
        enforcer: Arc<Enforcer>,
        audit: moat_audit::AuditLog,
        limits: Limits,
        admin: Arc<crate::admin::Admin>,
        options: Options,
    ) -> Gateway {
        Gateway {
            engine,
            enforcer,
            audit,
            limits,
            admin,
            options,
            jwt: None,
            ids: IdSource::new(),
        }
    }

    /// Accepts bearer tokens from connections without a certificate.
    pub fn with_bearer_tokens(mut self, verifier: crate::jwt::JwtVerifier) -> Gateway {
        self.jwt = Some(verifier);
        self
    }

    pub fn bearer_tokens(&self) -> bool {
        self.jwt.is_some()
    }

    /// The caller a request's bearer token names.
    fn bearer(&self, headers: &HeaderMap) -> Result<Caller, String> {
        let verifier = self
            .jwt
            .as_ref()
            .ok_or_else(|| "a client certificate is required".to_owned())?;
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| "a client certificate or a bearer token is required".to_owned())?
            .to_str()
            .map_err(|_| "the Authorization header is not text".to_owned())?;
        verifier.caller(value)
    }

    /// Serves one request of a connection.
    pub async fn call(
        self: Arc<Self>,
        conn: Arc<Registration>,
        request: Request<Incoming>,
        framing: Framing,
    ) -> GatewayResponse {
        let target = request.uri().path_and_query().map_or_else(
            || request.uri().path().to_owned(),
            |pq| pq.as_str().to_owned(),
        );
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        // Authenticate: the connection's certificate, or else this
        // request's bearer token.
        let caller = match &conn.session.caller {
            Some(caller) => Ok(caller.clone()),
            None => self.bearer(request.headers()),
        };
        let anonymous = Caller {
            user: String::new(),
            groups: Vec::new(),
            auth: moat_audit::Auth::None,
            serial: None,
            fingerprint: None,
        };
        let mut record = CallRecord::new(
            self.ids.next(),
            caller.as_ref().unwrap_or(&anonymous),
            &conn.session.source,
            request.method().as_str(),
            &target,
            user_agent,
        );
        let caller = match caller {
            Ok(caller) => caller,
            Err(reason) => {
                let refusal = Refusal::deny(StatusCode::UNAUTHORIZED, format!("moat: {reason}"));
                return self.refuse(record, refusal).await;
            }
        };
        match self
            .clone()
            .pipeline(&conn, &caller, request, framing, &target, &mut record)
            .await
        {
            Ok(response) => response,
            Err(refusal) => self.refuse(record, refusal).await,
        }
    }

    async fn pipeline(
        self: Arc<Self>,
        conn: &Arc<Registration>,
        caller: &Caller,
        mut request: Request<Incoming>,
        framing: Framing,
        target: &str,
        record: &mut CallRecord,
    ) -> Result<GatewayResponse, Refusal> {
        let identity = caller.identity();

        // Classify: the route table decides what the call is, never the raw path.
        let route = moat_api::classify(request.method().as_str(), target).map_err(refused_route)?;
        record.action = Some(route.action);
        record.object = route.object.as_ref().map(|o| o.name().to_owned());
        if self.options.request_level.contains(&route.action) {
            record.level = Level::Request;
        }
        let query = Query::parse(route.query.as_deref())
            .map_err(|e| Refusal::deny(StatusCode::BAD_REQUEST, e.to_string()))?;

        // Limits: per user, before any work is done for the call.
        let _admitted = self
            .limits
            .admit(&caller.user)
            .map_err(|e| Refusal::deny(StatusCode::TOO_MANY_REQUESTS, e.to_string()))?;

        // Body: judged bodies are buffered whole; streams are never read here.
        body::check_framing(request.headers(), framing).map_err(body_refusal)?;
        let client_upgrade = (route.action.connection() == Connection::Hijacked)
            .then(|| hyper::upgrade::on(&mut request));
        let (parts, incoming) = request.into_parts();
        let (mut judged, streamed) = match route.action.body_use() {
            BodyUse::Stream => (None, Some(incoming)),
            BodyUse::Json | BodyUse::None => {
                let bytes = body::buffer(&parts.headers, incoming, self.options.body_limit)
                    .await
                    .map_err(body_refusal)?;
                record.bytes_in = bytes.len() as u64;
                (Some(bytes), None)
            }
        };

        // Requirements: the action and every privilege the request asks for.
        let mut requirements = moat_policy::derive(&route, &query, judged.as_deref())
            .map_err(|e| Refusal::deny(StatusCode::BAD_REQUEST, e.to_string()))?;
        if let Some(bytes) = &judged {
            record.keep_body(bytes);
        }

        // Ownership: stamp new containers, narrow lists, check named ones.
        let forward_target = self
            .ownership(
                &identity,
                &caller.user,
                &route,
                &query,
                &mut requirements,
                &mut judged,
                target,
            )
            .await?;

        // Authorize: every requirement, deny wins, default deny.
        let verdict = self.enforcer.decide(&identity, &requirements);
        if let Some(candidate) = self.admin.dry_run.load_full() {
            let shadow = candidate.decide(&identity, &requirements);
            if shadow.allowed != verdict.allowed {
                let denied: Vec<String> = shadow
                    .denials()
                    .map(|d| format!("{} ({})", d.requirement, d.rule))
                    .collect();
                record.dry_run =
                    Some(serde_json::json!({ "allowed": shadow.allowed, "denied": denied }));
            }
        }
        let allowed = verdict.allowed;
        let message = (!allowed).then(|| denial_message(&caller.user, &verdict));
        record.verdict = Some(verdict);
        if let Some(message) = message {
            return Err(Refusal::deny(StatusCode::FORBIDDEN, message));
        }

        if route.action.served_by() == Server::Gateway {
            let (status, body) = self
                .admin
                .serve(&route, caller, judged.as_deref().unwrap_or(b""))
                .await;
            return Ok(self.complete_plain(record, status, body).await);
        }

        // Audit before forwarding anything that changes state or lasts.
        let lasting = route.action.connection() != Connection::Plain;
        if route.action.access() == Access::Mutating || lasting {
            self.audit
                .append(record.started())
                .await
                .map_err(audit_refusal)?;
        }

        let body = match (judged, streamed) {
            (_, Some(incoming)) => body::incoming(incoming),
            (Some(bytes), None) => body::full(bytes),
            (None, None) => body::empty(),
        };
        let outbound = outbound_request(&parts, &forward_target, body, client_upgrade.is_some());
        match route.action.connection() {
            Connection::Plain => {
                let response = self
                    .engine
                    .send_buffered(outbound)
                    .await
                    .map_err(bad_gateway)?;
                let (head, bytes) = response.into_parts();
                let outcome = Outcome {
                    decision: Decision::Allow,
                    reason: None,
                    status: head.status.as_u16(),
                    bytes_out: bytes.len() as u64,
                };
                self.audit
                    .append(record.completed(&outcome))
                    .await
                    .map_err(audit_refusal)?;
                Ok(answer(head, body::full(bytes)))
            }
            Connection::Streaming => {
                let response = self
                    .engine
                    .send_streaming(outbound)
                    .await
                    .map_err(bad_gateway)?;
                let (head, incoming) = response.into_parts();
                let status = head.status.as_u16();
                let audit = self.audit.clone();
                let finished = record.clone();
                let counted = Counted::new(incoming, move |bytes_out, complete| {
                    let outcome = Outcome {
                        decision: Decision::Allow,
                        reason: (!complete).then(|| "the stream ended early".to_owned()),
                        status,
                        bytes_out,
                    };
                    let completed = finished.completed(&outcome);
                    tokio::spawn(async move {
                        if let Err(err) = audit.append(completed).await {
                            tracing::error!("audit: could not complete a streamed call: {err}");
                        }
                    });
                });
                Ok(answer(head, http_body_util::BodyExt::boxed(counted)))
            }
            Connection::Hijacked => {
                let client_upgrade = client_upgrade.expect("taken for hijacked actions");
                crate::hijack::forward(self.clone(), conn.clone(), outbound, client_upgrade, record)
                    .await
                    .map_err(bad_gateway)
            }
        }
    }

    /// The ownership step. Returns the target to forward: the one received,
    /// or one rewritten to the container's full id or to a narrowed list.
    #[allow(clippy::too_many_arguments)]
    async fn ownership(
        &self,
        identity: &moat_policy::Identity,
        user: &str,
        route: &Route,
        query: &Query,
        requirements: &mut Vec<Requirement>,
        judged: &mut Option<Bytes>,
        target: &str,
    ) -> Result<String, Refusal> {
        let unavailable = |e: crate::engine::EngineUnavailable| {
            Refusal::error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        };
        match (route.action, &route.object) {
            (Action::ContainerCreate, _) => {
                let body = judged.as_deref().unwrap_or(b"{}");
                let stamped = ownership::stamp_owner(body, user).map_err(|e| {
                    let status = match e {
                        ownership::OwnerError::Forged => StatusCode::FORBIDDEN,
                        ownership::OwnerError::Json(_) => StatusCode::BAD_REQUEST,
                    };
                    Refusal::deny(status, e.to_string())
                })?;
                // The stamped body is what is forwarded, so it is judged
                // again: the label must not change what the call needs.
                let again = moat_policy::derive(route, query, Some(&stamped))
                    .map_err(|e| Refusal::deny(StatusCode::BAD_REQUEST, e.to_string()))?;
                if &again != requirements {
                    return Err(Refusal::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "stamping the owner label changed the request's requirements",
                    ));
                }
                *judged = Some(stamped);
                Ok(target.to_owned())
            }
            (Action::ContainerList | Action::ContainerPrune | Action::SystemEvents, _) => {
                if self.holds(identity, Permission::ContainerAny) {
                    return Ok(target.to_owned());
                }
                let narrowed = ownership::narrow_query(query, route.query.as_deref(), user)
                    .map_err(|e| Refusal::deny(StatusCode::BAD_REQUEST, e))?;
                Ok(format!("{}?{narrowed}", versioned_path(route, &route.path)))
            }
            // `docker commit` names its container in the query.
            (Action::ContainerCommit, _) => {
                let Some(name) = query.get("container").filter(|c| !c.is_empty()) else {
                    return Ok(target.to_owned());
                };
                let owned = self.container(name).await.map_err(unavailable)?;
                let owned = owned.ok_or_else(|| {
                    Refusal::error(StatusCode::NOT_FOUND, format!("No such container: {name}"))
                })?;
                if !owned.is_owned_by(user) {
                    requirements.extend(Requirement::on_others(ObjectKind::Container));
                }
                let query =
                    ownership::replace_param(route.query.as_deref(), "container", &owned.id);
                Ok(format!("{}?{query}", versioned_path(route, &route.path)))
            }
            (_, Some(Object::Container(name))) => {
                let owned = self.container(name).await.map_err(unavailable)?;
                let owned = owned.ok_or_else(|| {
                    Refusal::error(StatusCode::NOT_FOUND, format!("No such container: {name}"))
                })?;
                if !owned.is_owned_by(user) {
                    requirements.extend(Requirement::on_others(ObjectKind::Container));
                }
                // Forward by full id, so the call reaches the container
                // that was checked even if a name moves meanwhile.
                let path = replace_segment(&route.path, 2, &owned.id);
                Ok(match &route.query {
                    Some(q) => format!("{}?{q}", versioned_path(route, &path)),
                    None => versioned_path(route, &path),
                })
            }
            (_, Some(Object::Exec(id))) => {
                let exec = self
                    .engine
                    .get_json(&format!("/exec/{}/json", encode_segment(id)))
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| {
                        Refusal::error(
                            StatusCode::NOT_FOUND,
                            format!("No such exec instance: {id}"),
                        )
                    })?;
                let container = exec["ContainerID"].as_str().unwrap_or_default().to_owned();
                let owned = self.container(&container).await.map_err(unavailable)?;
                if !owned.is_some_and(|o| o.is_owned_by(user)) {
                    requirements.extend(Requirement::on_others(ObjectKind::Exec));
                }
                Ok(target.to_owned())
            }
            _ => Ok(target.to_owned()),
        }
    }

    async fn container(
        &self,
        name: &str,
    ) -> Result<Option<Owned>, crate::engine::EngineUnavailable> {
        if name.is_empty() {
            return Ok(None);
        }
        let inspect = self
            .engine
            .get_json(&format!("/containers/{}/json", encode_segment(name)))
            .await?;
        Ok(inspect.as_ref().and_then(Owned::from_inspect))
    }

    fn holds(&self, identity: &moat_policy::Identity, permission: Permission) -> bool {
        self.enforcer
            .check(identity, &Requirement::flag(permission))
            .allowed
    }

    /// Answers a call the gateway serves itself, completing its record.
    async fn complete_plain(
        &self,
        record: &CallRecord,
        status: StatusCode,
        body: Bytes,
    ) -> GatewayResponse {
        let outcome = Outcome {
            decision: Decision::Allow,
            reason: None,
            status: status.as_u16(),
            bytes_out: body.len() as u64,
        };
        if let Err(err) = self.audit.append(record.completed(&outcome)).await {
            return error_response(audit_refusal(err).status, &err_text(&record.audit_id));
        }
        json_response(status, body)
    }

    /// Completes a refused call's record and answers it. If even that
    /// record cannot be written, the answer is 503.
    async fn refuse(&self, record: CallRecord, refusal: Refusal) -> GatewayResponse {
        let outcome = Outcome {
            decision: refusal.decision,
            reason: Some(refusal.message.clone()),
            status: refusal.status.as_u16(),
            bytes_out: 0,
        };
        match self.audit.append(record.completed(&outcome)).await {
            Ok(_) => error_response(refusal.status, &refusal.message),
            Err(err) => error_response(audit_refusal(err).status, &err_text(&record.audit_id)),
        }
    }
}

/// The engine did not answer: 502, and the record says why.
fn bad_gateway(err: impl std::fmt::Display) -> Refusal {
    Refusal::error(StatusCode::BAD_GATEWAY, err.to_string())
}

fn err_text(audit_id: &str) -> String {
    format!("moat: the audit log cannot be written, so the call was refused (audit id {audit_id})")
}

fn audit_refusal(err: moat_audit::AuditError) -> Refusal {
    tracing::error!("audit: {err}");
    Refusal::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "moat: the audit log cannot be written, so the call was refused",
    )
}

fn refused_route(err: ClassifyError) -> Refusal {
    let status = match &err {
        ClassifyError::UnknownRoute { .. } | ClassifyError::MethodNotAllowed { .. } => {
            StatusCode::FORBIDDEN
        }
        other => StatusCode::from_u16(other.status()).unwrap_or(StatusCode::BAD_REQUEST),
    };
    Refusal::deny(status, format!("moat: {err}"))
}

fn body_refusal(err: BodyError) -> Refusal {
    let status = match err {
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::AmbiguousFraming | BodyError::UnknownFraming | BodyError::Read(_) => {
            StatusCode::BAD_REQUEST
        }
    };
    Refusal::deny(status, format!("moat: {err}"))
}

/// `moat: alice may not container.privileged (default deny); host.bind:/ (...)`.
fn denial_message(user: &str, verdict: &moat_policy::Verdict) -> String {
    let denied: Vec<String> = verdict
        .denials()
        .map(|d| format!("{} ({})", d.requirement, d.rule))
        .collect();
    if denied.is_empty() {
        return format!("moat: {user} may not make this call (nothing allowed it)");
    }
    format!("moat: {user} may not {}", denied.join("; "))
}

fn versioned_path(route: &Route, path: &str) -> String {
    match route.version {
        Some(version) => format!("/v{version}{path}"),
        None => path.to_owned(),
    }
}

/// `path` with its `index`th `/`-separated segment (0 is the empty one
/// before the leading slash) replaced by `value`, percent-encoded.
fn replace_segment(path: &str, index: usize, value: &str) -> String {
    let mut segments: Vec<String> = path.split('/').map(encode_segment).collect();
    if let Some(segment) = segments.get_mut(index) {
        *segment = encode_segment(value);
    }
    segments.join("/")
}

/// Percent-encodes what a path segment cannot hold literally.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Headers that belong to one hop and are not forwarded.
const HOP_BY_HOP: [header::HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
];

fn outbound_request(
    parts: &hyper::http::request::Parts,
    target: &str,
    body: GatewayBody,
    upgrade: bool,
) -> Request<GatewayBody> {
    let mut builder = Request::builder().method(parts.method.clone()).uri(target);
    let headers = builder.headers_mut().expect("a fresh builder");
    copy_end_to_end(&parts.headers, headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove("keep-alive");
    if let Some(length) = hyper::body::Body::size_hint(&body).exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    }
    builder
        .body(body)
        .expect("a request built from a valid one")
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(name) && name.as_str() != "keep-alive" {
            to.append(name.clone(), value.clone());
        }
    }
}

/// The engine's response head with the body the gateway sends on.
fn answer(head: hyper::http::response::Parts, body: GatewayBody) -> GatewayResponse {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    copy_end_to_end(&head.headers, response.headers_mut());
    response.headers_mut().remove("keep-alive");
    response
}

pub fn json_response(status: StatusCode, body: Bytes) -> GatewayResponse {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Docker's error shape: `{"message": "..."}`. It carries the API version
/// too, as the engine's answers do: the docker CLI negotiates from its
/// `/_ping`, even a refused one, and without it would fall back to its own
/// newer version and show a version error instead of the refusal.
pub fn error_response(status: StatusCode, message: &str) -> GatewayResponse {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = json_response(status, Bytes::from(body));
    response.headers_mut().insert(
        "api-version",
        HeaderValue::from_static(moat_api::MAX_API_VERSION),
    );
    response
}

/// Audit ids: unique per gateway run (a random prefix and a counter), so
/// a call's started and completed records can be matched.
struct IdSource {
    prefix: String,
    next: AtomicU64,
}

impl IdSource {
    fn new() -> IdSource {
        let mut random = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut random);
        IdSource {
            prefix: random.iter().map(|b| format!("{b:02x}")).collect(),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{:x}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_replaced_and_encoded() {
        assert_eq!(
            replace_segment("/containers/web/start", 2, "abc123"),
            "/containers/abc123/start"
        );
        assert_eq!(
            replace_segment("/containers/web/json", 2, "a b"),
            "/containers/a%20b/json"
        );
        assert_eq!(encode_segment("x/y?z"), "x%2Fy%3Fz");
    }
}
