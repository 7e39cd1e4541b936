//! `POST /images/create?fromImage=` (pull), `POST /images/{name}/push`
//! and `POST /auth` (login): the registry client over HTTP, with Docker's
//! streamed JSON progress. An error before the first progress line is an
//! ordinary error answer (the CLI shows `Error response from daemon`);
//! after it, the stream's last line is Docker's `errorDetail` message.

use std::future::Future;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use super::{ApiError, ApiResult, Call, Engine, json};
use crate::images::Reference;
use crate::registry::progress::{Progress, error_line};
use crate::registry::pull::{Platform, PullRequest};
use crate::registry::{AuthConfig, Credentials, RegistryError, login, pull, push};

/// The largest `/auth` body read.
const MAX_AUTH_BODY: usize = 64 << 10;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.to_string())
    }
}

/// The credentials of `X-Registry-Auth`, anonymous when absent.
fn credentials(call: &Call) -> Result<Credentials, ApiError> {
    let Some(value) = call.request.headers().get("x-registry-auth") else {
        return Ok(Credentials::Anonymous);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not text"))?;
    Ok(AuthConfig::from_header(text)?.credentials()?)
}

/// What `fromImage` and `tag` name: `tag` may be a digest.
fn pull_reference(from: &str, tag: &str) -> Result<Reference, ApiError> {
    if from.is_empty() {
        return Err(ApiError::bad_request("fromImage names no image"));
    }
    let text = match tag {
        "" => from.to_owned(),
        digest if digest.starts_with("sha256:") => format!("{from}@{digest}"),
        tag => format!("{from}:{tag}"),
    };
    Reference::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `docker pull`.
pub async fn pull(engine: Arc<Engine>, call: Call) -> ApiResult {
    let from = call.query.get("fromImage").unwrap_or_default();
    let tag = call.query.get("tag").unwrap_or_default();
    let name_only = moat_api::image_ref::parse(from).is_ok_and(|p| p.name_only);
    if tag.is_empty() && name_only && call.query.contains("tag") {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "pulling every tag of a repository (docker pull --all-tags) is not supported by moat",
        ));
    }
    let reference = pull_reference(from, tag)?;
    let platform = call
        .query
        .get("platform")
        .filter(|p| !p.is_empty())
        .map(Platform::parse)
        .transpose()?;
    let credentials = credentials(&call)?;
    streamed(move |progress| async move {
        let request = PullRequest {
            reference: reference.clone(),
            platform,
            credentials,
        };
        let pulled =
            pull::pull(&engine.registry, engine.images.clone(), request, &progress).await?;
        let name = reference.familiar();
        progress.status(&format!("Digest: {}", pulled.digest));
        progress.status(&format!(
            "Status: {} for {name}",
            if pulled.up_to_date {
                "Image is up to date"
            } else {
                "Downloaded newer image"
            }
        ));
        engine.events.image(&pulled.id.to_string(), "pull", &name);
        Ok(())
    })
    .await
}

/// `docker push`.
pub async fn push(engine: Arc<Engine>, call: Call) -> ApiResult {
    let name = call.object()?;
    let tag = call.query.get("tag").map(str::to_owned);
    let credentials = credentials(&call)?;
    let tags = {
        let images = engine.images.clone();
        super::blocking(move || Ok(push::tags_to_push(&images, &name, tag.as_deref())?)).await?
    };
    streamed(move |progress| async move {
        progress.status(&format!(
            "The push refers to repository [{}]",
            tags[0].repository()
        ));
        for tag in &tags {
            let pushed = push::push(
                &engine.registry,
                engine.images.clone(),
                tag,
                credentials.clone(),
                &progress,
            )
            .await?;
            let name = pushed.reference.familiar();
            engine.events.image(&name, "push", &name);
        }
        Ok(())
    })
    .await
}

/// `docker login`.
pub async fn auth(engine: Arc<Engine>, call: Call) -> ApiResult {
    let body = call.body_bytes(MAX_AUTH_BODY).await?;
    let config: AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let logged_in = login::login(&engine.registry, &config).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "Status": "Login Succeeded",
            "IdentityToken": logged_in.identity_token.unwrap_or_default(),
        }),
    ))
}

/// Runs `work` and streams its progress. Until the first line, a failure
/// is an error answer with its status; after it, an `errorDetail` line.
async fn streamed<F, Fut>(work: F) -> ApiResult
where
    F: FnOnce(Progress) -> Fut,
    Fut: Future<Output = Result<(), RegistryError>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let task = tokio::spawn(work(Progress::new(tx.clone())));
    // The task's clones are all that is left once this one goes: the
    // channel closes when the work (and every task it started) is done.
    drop(tx);
    let Some(first) = rx.recv().await else {
        let result = task
            .await
            .map_err(|e| ApiError::internal(format!("task failed: {e}")))?;
        result?;
        return Ok(stream_response(tokio::sync::mpsc::channel(1).1));
    };
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut client = true;
        let mut line = Some(first);
        while let Some(bytes) = line {
            // A client that went away stops reading; the work goes on.
            client = client && out_tx.send(bytes).await.is_ok();
            line = rx.recv().await;
        }
        let result = task
            .await
            .unwrap_or_else(|e| Err(RegistryError::protocol("task", e)));
        if let Err(e) = result {
            tracing::warn!(error = %e, "registry operation failed");
            if client {
                let _ = out_tx.send(error_line(&e.to_string())).await;
            }
        }
    });
    Ok(stream_response(out_rx))
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let mut response = Response::new(super::stream_body(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_image_and_tag_make_one_reference() {
        let r = pull_reference("busybox", "latest").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = pull_reference("127.0.0.1:5000/team/app", "1").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = pull_reference("team/app", &digest).unwrap();
        assert_eq!(r.digest(), Some(digest.as_str()));
        assert_eq!(r.tag(), None);
        let r = pull_reference("busybox:1.36", "").unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert!(pull_reference("", "x").is_err());
        assert!(pull_reference("UPPER", "x").is_err());
    }
}
