//! Pulls from a fake registry on loopback (what a real one rarely does on
//! demand: redirect blobs to another host, lie about sizes and digests),
//! into a store in a temporary directory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::progress::Progress;
use super::pull::{PullRequest, pull};
use super::{Credentials, Registry, RegistryConfig, RegistryError};
use crate::images::testutil::{gzip, rootfs_tar, sha256_hex};
use crate::images::{ImageStore, Reference};

/// An answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// What the fake registry serves and what it saw.
#[derive(Default)]
struct Fake {
    /// Path → answer.
    routes: HashMap<String, Answer>,
    /// The Authorization header of each request, by path.
    seen: Vec<(String, Option<String>)>,
}

type Shared = Arc<Mutex<Fake>>;

async fn serve_fake(State(fake): State<Shared>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut fake = fake.lock().unwrap();
    fake.seen.push((path.clone(), auth));
    let key = path.split('?').next().unwrap_or_default().to_owned();
    let (status, headers, body) = fake.routes.get(&key).cloned().unwrap_or((
        404,
        Vec::new(),
        b"{\"errors\":[{\"code\":\"NOT_FOUND\",\"message\":\"no\"}]}".to_vec(),
    ));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    let map: &mut HeaderMap = response.headers_mut();
    for (name, value) in headers {
        map.append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

/// A fake server on 127.0.0.1: its port and its state.
async fn start_fake() -> (u16, Shared) {
    let fake: Shared = Arc::default();
    let app = axum::Router::new()
        .fallback(serve_fake)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, fake)
}

fn route(fake: &Shared, path: &str, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    fake.lock().unwrap().routes.insert(
        path.to_owned(),
        (
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body.to_vec(),
        ),
    );
}

struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
    layer_digest: String,
    config_digest: String,
}

/// A one-layer Docker schema2 image.
fn image() -> Image {
    let tar = rootfs_tar("fake");
    let layer = gzip(&tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))] },
    }))
    .unwrap();
    let (layer_digest, config_digest) = (
        format!("sha256:{}", sha256_hex(&layer)),
        format!("sha256:{}", sha256_hex(&config)),
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.len(),
            "digest": config_digest,
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": layer.len(),
            "digest": layer_digest,
        }],
    }))
    .unwrap();
    Image {
        manifest,
        config,
        layer,
        layer_digest,
        config_digest,
    }
}

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A registry with a token service, whose layer blob redirects to a
/// second server (a CDN).
async fn registry_with_cdn(image: &Image) -> (u16, Shared, Shared) {
    let (port, registry) = start_fake().await;
    let (cdn_port, cdn) = start_fake().await;
    let challenge = format!(
        r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:team/app:pull""#
    );
    route(
        &registry,
        "/v2/",
        401,
        &[("www-authenticate", &challenge)],
        b"{}",
    );
    route(&registry, "/token", 200, &[], br#"{"token":"T0K3N"}"#);
    let manifest_digest = format!("sha256:{}", sha256_hex(&image.manifest));
    route(
        &registry,
        "/v2/team/app/manifests/1",
        200,
        &[
            ("content-type", MANIFEST_TYPE),
            ("docker-content-digest", &manifest_digest),
        ],
        &image.manifest,
    );
    route(
        &registry,
        &format!("/v2/team/app/blobs/{}", image.config_digest),
        200,
        &[],
        &image.config,
    );
    let cdn_path = format!("/cdn/{}", image.layer_digest);
    route(
        &registry,
        &format!("/v2/team/app/blobs/{}", image.layer_digest),
        307,
        &[(
            "location",
            &format!("http://127.0.0.1:{cdn_port}{cdn_path}?sig=x"),
        )],
        b"",
    );
    route(&cdn, &cdn_path, 200, &[], &image.layer);
    (port, registry, cdn)
}

fn store() -> (tempfile::TempDir, Arc<ImageStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(dir.path()).unwrap());
    (dir, store)
}

async fn pull_from(
    port: u16,
    store: &Arc<ImageStore>,
) -> Result<super::pull::Pulled, RegistryError> {
    let registry = Registry::new(RegistryConfig::default());
    let request = PullRequest {
        reference: Reference::parse(&format!("127.0.0.1:{port}/team/app:1")).unwrap(),
        platform: None,
        credentials: Credentials::Password {
            username: "alice".into(),
            password: "pw".into(),
        },
    };
    pull(&registry, store.clone(), request, &Progress::discard()).await
}

#[tokio::test]
async fn a_token_and_a_redirected_blob() {
    let image = image();
    let (port, registry, cdn) = registry_with_cdn(&image).await;
    let (_dir, store) = store();
    let pulled = pull_from(port, &store).await.unwrap();
    assert_eq!(pulled.id.to_string(), image.config_digest);
    assert!(!pulled.up_to_date);
    let details = store
        .inspect(&format!("127.0.0.1:{port}/team/app:1"))
        .unwrap();
    assert_eq!(details.config.cmd.unwrap(), ["/bin/hello"]);
    let manifest_digest = format!("sha256:{}", sha256_hex(&image.manifest));
    let by_digest = format!("127.0.0.1:{port}/team/app@{manifest_digest}");
    assert_eq!(pulled.digest, manifest_digest);
    assert_eq!(details.repo_digests, std::slice::from_ref(&by_digest));
    assert_eq!(store.resolve(&by_digest).unwrap(), pulled.id);

    let seen = registry.lock().unwrap().seen.clone();
    let token = seen.iter().find(|(p, _)| p.starts_with("/token")).unwrap();
    assert!(
        token.0.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{token:?}"
    );
    assert!(token.0.contains("service=fake"), "{token:?}");
    assert_eq!(token.1.as_deref(), Some("Basic YWxpY2U6cHc="));
    let manifest = seen
        .iter()
        .find(|(p, _)| p.contains("/manifests/"))
        .unwrap();
    assert_eq!(manifest.1.as_deref(), Some("Bearer T0K3N"));
    // The CDN got the redirect's query and none of the registry's credentials.
    let cdn_seen = cdn.lock().unwrap().seen.clone();
    assert_eq!(cdn_seen.len(), 1);
    assert!(cdn_seen[0].0.ends_with("?sig=x"));
    assert_eq!(cdn_seen[0].1, None);

    // Again: the layer is there, only the manifest and config are read.
    let again = pull_from(port, &store).await.unwrap();
    assert!(again.up_to_date);
    assert_eq!(cdn.lock().unwrap().seen.len(), 1);
}

/// Nothing of a failed pull stays: no image, no blob, no ingest file.
fn assert_empty(dir: &tempfile::TempDir, store: &ImageStore) {
    assert!(store.list().unwrap().is_empty());
    let blobs = std::fs::read_dir(dir.path().join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
    let ingest = std::fs::read_dir(dir.path().join("images.ingest"))
        .unwrap()
        .count();
    assert_eq!(ingest, 0);
}

#[tokio::test]
async fn a_blob_longer_than_announced_is_refused() {
    let image = image();
    let (port, _registry, cdn) = registry_with_cdn(&image).await;
    let mut longer = image.layer.clone();
    longer.extend_from_slice(b"trailing bytes");
    route(
        &cdn,
        &format!("/cdn/{}", image.layer_digest),
        200,
        &[],
        &longer,
    );
    let (dir, store) = store();
    let err = pull_from(port, &store).await.unwrap_err();
    assert!(err.to_string().contains("more than the"), "{err}");
    assert_empty(&dir, &store);
}

#[tokio::test]
async fn a_blob_shorter_than_announced_is_refused() {
    let image = image();
    let (port, _registry, cdn) = registry_with_cdn(&image).await;
    let shorter = &image.layer[..image.layer.len() - 10];
    route(
        &cdn,
        &format!("/cdn/{}", image.layer_digest),
        200,
        &[],
        shorter,
    );
    let (dir, store) = store();
    let err = pull_from(port, &store).await.unwrap_err();
    assert!(err.to_string().contains("were announced"), "{err}");
    assert_empty(&dir, &store);
}

#[tokio::test]
async fn a_manifest_that_is_not_its_digest_is_refused() {
    let image = image();
    let (port, registry, _cdn) = registry_with_cdn(&image).await;
    let wrong = format!("sha256:{}", "0".repeat(64));
    route(
        &registry,
        "/v2/team/app/manifests/1",
        200,
        &[
            ("content-type", MANIFEST_TYPE),
            ("docker-content-digest", &wrong),
        ],
        &image.manifest,
    );
    let (dir, store) = store();
    let err = pull_from(port, &store).await.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_empty(&dir, &store);
}

#[tokio::test]
async fn a_layer_that_is_not_its_diff_id_is_refused() {
    let mut image = image();
    // A valid blob (its digest is right) whose content is another tar.
    image.layer = gzip(&rootfs_tar("other"));
    image.layer_digest = format!("sha256:{}", sha256_hex(&image.layer));
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["layers"][0]["digest"] = image.layer_digest.clone().into();
    manifest["layers"][0]["size"] = image.layer.len().into();
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    let (port, _registry, _cdn) = registry_with_cdn(&image).await;
    let (dir, store) = store();
    let err = pull_from(port, &store).await.unwrap_err();
    assert!(err.to_string().contains("uncompressed content"), "{err}");
    assert_empty(&dir, &store);
}

#[tokio::test]
async fn refused_credentials_are_unauthorized() {
    let image = image();
    let (port, registry, _cdn) = registry_with_cdn(&image).await;
    route(
        &registry,
        "/token",
        401,
        &[],
        br#"{"details":"incorrect username or password"}"#,
    );
    let (_dir, store) = store();
    let err = pull_from(port, &store).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string().contains("incorrect username or password"),
        "{err}"
    );
    assert_eq!(err.status(), 401);
}
